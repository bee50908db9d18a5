// XCTest tests of the Swift bindings: the same API as the Kotlin tests
// (bindings/uniffi/tests/kotlin/ApiTest.kt), checking the mapping of each function and its
// errors to HeartgateError. The Rust tests carry the weight of the checks. Needs a Swift
// toolchain: `tests/mobile.sh` generates the sources, then `swift test` here.
import Foundation
import XCTest
@testable import Heartgate
#if canImport(CryptoKit)
import CryptoKit
#endif

let iss = "https://as.example"
let cb = "https://clinic.example/cb"

func b64url(_ d: Data) -> String {
    d.base64EncodedString().replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
}

func config() -> ClientConfig {
    ClientConfig(issuer: iss, clientId: "clinic-app", redirectUri: cb,
                 authorizationEndpoint: "\(iss)/authorize", parEndpoint: "\(iss)/par",
                 tokenEndpoint: "\(iss)/token")
}

func params(_ challenge: String) -> AuthorizationParams {
    AuthorizationParams(scope: "openid", state: "st-1", codeChallenge: challenge, nonce: nil, resource: [])
}

func reason(_ e: Error) -> String? {
    switch e as? HeartgateError {
    case .InvalidArgument(let r)?, .VerificationFailed(let r)?, .SignerFailed(let r)?, .Internal(let r)?: return r
    case .ServerError(let error, _, _)?: return error
    case nil: return nil
    }
}

/// A signer that fails the way a cancelled Face ID prompt would.
final class CancelledSigner: Signer, @unchecked Sendable {
    let inner: Signer
    init() throws { inner = try softwareSigner(pkcs8Pem: try generateP256PrivateKey(), kid: nil) }
    func publicJwk() throws -> String { try inner.publicJwk() }
    func sign(message: Data) throws -> Data { throw HeartgateError.SignerFailed(reason: "user_cancelled") }
}

#if canImport(CryptoKit)
/// A CryptoKit P-256 key (a Secure Enclave key has the same API): `rawRepresentation` of
/// the signature is the JOSE r||s that the Signer contract asks for.
final class CryptoKitSigner: Signer, @unchecked Sendable {
    let key = P256.Signing.PrivateKey()
    func publicJwk() throws -> String {
        let raw = key.publicKey.rawRepresentation // x || y
        return "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"\(b64url(raw.prefix(32)))\",\"y\":\"\(b64url(raw.suffix(32)))\",\"kid\":\"ck-1\"}"
    }
    func sign(message: Data) throws -> Data { try key.signature(for: message).rawRepresentation }
}
#endif

final class HeartgateTests: XCTestCase {
    func testCoreVersion() { XCTAssertFalse(coreVersion().isEmpty) }

    func testSoftwareSignerSignsJoseRs() throws {
        let s = try softwareSigner(pkcs8Pem: try generateP256PrivateKey(), kid: "k1")
        XCTAssertTrue(try s.publicJwk().contains("\"kid\":\"k1\""))
        XCTAssertEqual(try s.sign(message: Data("hi".utf8)).count, 64)
        XCTAssertThrowsError(try softwareSigner(pkcs8Pem: "not a key", kid: nil)) { XCTAssertEqual(reason($0), "private_key") }
    }

    func testPkcePairIsS256() throws {
        let p = try pkcePair()
        XCTAssertEqual(p.verifier.count, 43)
        XCTAssertEqual(p.method, "S256")
    }

    #if canImport(CryptoKit)
    func testAssertionFromACryptoKitSigner() throws {
        let c = try FapiClient(config: config(), signer: CryptoKitSigner())
        XCTAssertEqual(try c.clientAssertion().split(separator: ".").count, 3)
    }
    #endif

    func testSignerErrorsCrossTheBoundaryTyped() throws {
        let c = try FapiClient(config: config(), signer: try CancelledSigner())
        XCTAssertThrowsError(try c.clientAssertion()) { XCTAssertEqual(reason($0), "user_cancelled") }
    }

    func testConfigErrors() throws {
        var cfg = config()
        cfg.issuer = "http://as.example"
        XCTAssertThrowsError(try FapiClient(config: cfg, signer: try CancelledSigner())) { XCTAssertEqual(reason($0), "issuer") }
    }

    func testParRequestAndResponse() throws {
        let c = try FapiClient(config: config(), signer: try softwareSigner(pkcs8Pem: try generateP256PrivateKey(), kid: nil))
        let post = try c.parRequest(params: params(try pkcePair().challenge))
        XCTAssertEqual(post.fields.map { $0.name }, ["client_id", "request", "client_assertion_type", "client_assertion"])
        XCTAssertEqual(try c.parseParResponse(status: 201, body: "{\"request_uri\":\"urn:x\",\"expires_in\":60}").requestUri, "urn:x")
        XCTAssertThrowsError(try c.parseParResponse(status: 400, body: "{\"error\":\"invalid_request_object\"}")) {
            guard case .ServerError(let error, _, let status)? = $0 as? HeartgateError else { return XCTFail("\($0)") }
            XCTAssertEqual(error, "invalid_request_object")
            XCTAssertEqual(status, 400)
        }
        XCTAssertTrue(try c.authorizationUrl(requestUri: "urn:x").hasPrefix("\(iss)/authorize?client_id=clinic-app"))
    }

    func testJarmAndIssChecks() throws {
        let s = try softwareSigner(pkcs8Pem: try generateP256PrivateKey(), kid: nil)
        let c = try FapiClient(config: config(), signer: s)
        let jwks = "{\"keys\":[\(try s.publicJwk())]}"
        XCTAssertThrowsError(try c.verifyAuthorizationResponse(redirectUrl: "\(cb)?response=a.b.c", expectedState: "st-1", asJwks: jwks)) {
            XCTAssertEqual(reason($0), "malformed")
        }
        XCTAssertThrowsError(try c.verifyAuthorizationResponse(redirectUrl: "\(cb)?code=x&state=st-1", expectedState: "st-1", asJwks: jwks)) {
            XCTAssertEqual(reason($0), "jarm_required")
        }
        XCTAssertEqual(try c.verifyPlainAuthorizationResponse(redirectUrl: "\(cb)?code=c1&state=s&iss=\(iss)", expectedState: "s"), "c1")
        XCTAssertThrowsError(try c.verifyPlainAuthorizationResponse(redirectUrl: "\(cb)?code=c1&state=s", expectedState: "s")) {
            XCTAssertEqual(reason($0), "iss")
        }
    }

    func testTokenRequestsAndResponses() throws {
        let c = try FapiClient(config: config(), signer: try CancelledSigner())
        XCTAssertThrowsError(try c.tokenRequest(code: "c", codeVerifier: "short")) { XCTAssertEqual(reason($0), "code_verifier") }
        XCTAssertThrowsError(try c.refreshRequest(refreshToken: "")) { XCTAssertEqual(reason($0), "refresh_token") }
        let r = try parseTokenResponse(status: 200, body: "{\"access_token\":\"at\",\"token_type\":\"Bearer\"}")
        XCTAssertEqual(r.accessToken, "at")
        XCTAssertNil(r.expiresIn)
        XCTAssertThrowsError(try parseTokenResponse(status: 400, body: "{\"error\":\"invalid_grant\"}")) { XCTAssertEqual(reason($0), "invalid_grant") }
    }

    func testValidatorAndThumbprintErrors() throws {
        let s = try softwareSigner(pkcs8Pem: try generateP256PrivateKey(), kid: nil)
        let v = try AccessTokenValidator(issuer: iss, audience: "https://fhir.example/r4", jwks: "{\"keys\":[\(try s.publicJwk())]}")
        XCTAssertThrowsError(try v.validate(token: "nope")) { XCTAssertEqual(reason($0), "malformed") }
        XCTAssertThrowsError(try x5tS256(certificateDer: Data([1, 2, 3]))) { XCTAssertEqual(reason($0), "certificate") }
        XCTAssertThrowsError(try x5tS256OfPem(pem: "nope")) { XCTAssertEqual(reason($0), "certificate") }
    }

    func testCibaDevice() throws {
        let s = try softwareSigner(pkcs8Pem: try generateP256PrivateKey(), kid: nil)
        let pair = try devicePairingRequest(issuer: iss, pairingCode: "ABCD2345", deviceName: "Alice's iPhone", signer: s)
        XCTAssertEqual(pair.url, "\(iss)/device/pair")
        let id = b64url(Data(repeating: 1, count: 16))
        XCTAssertEqual(try parseDevicePairingResponse(status: 201, body: "{\"device_id\":\"\(id)\"}"), id)
        let d = try CibaDevice(issuer: iss, deviceId: id, signer: s)
        XCTAssertEqual(try d.pendingRequestsRequest().method, "GET")
        let dec = try d.decisionRequest(requestRef: b64url(Data(repeating: 3, count: 32)), approve: true, bindingMessage: "W4SCT")
        XCTAssertTrue(dec.authorization.hasPrefix("Bearer "))
        XCTAssertEqual(try d.parseDecisionResponse(status: 200, body: "{\"decision\":\"denied\"}"), .denied)
        XCTAssertThrowsError(try d.decisionRequest(requestRef: "nope", approve: true, bindingMessage: nil)) { XCTAssertEqual(reason($0), "request_ref") }
    }
}
