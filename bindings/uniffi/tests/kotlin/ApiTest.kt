// JUnit 5 tests of the Kotlin bindings on the JVM: every exported function once, and the
// mapping of its errors to HeartgateException. The Rust tests (src/tests.rs) carry the
// weight of the checks; these show that the mapping holds across the FFI (THREATS F3).
package health.heartgate.tests

import health.heartgate.*
import java.security.KeyPairGenerator
import java.security.Signature
import java.security.interfaces.ECPublicKey
import java.security.spec.ECGenParameterSpec
import java.util.Base64
import org.junit.jupiter.api.Assertions.*
import org.junit.jupiter.api.Test

const val ISS = "https://as.example"
const val CB = "https://clinic.example/cb"

fun b64url(b: ByteArray): String = Base64.getUrlEncoder().withoutPadding().encodeToString(b)

/** A JCA key as the app would hold it in a keystore: signs with P1363 (r||s) or DER. */
class JcaSigner(private val der: Boolean = false) : Signer {
    private val pair = KeyPairGenerator.getInstance("EC").apply {
        initialize(ECGenParameterSpec("secp256r1"))
    }.generateKeyPair()

    override fun publicJwk(): String {
        val p = (pair.public as ECPublicKey).w
        fun coord(v: java.math.BigInteger): String {
            val raw = v.toByteArray().let { if (it.size > 32) it.copyOfRange(it.size - 32, it.size) else it }
            return b64url(ByteArray(32 - raw.size) + raw)
        }
        return """{"kty":"EC","crv":"P-256","x":"${coord(p.affineX)}","y":"${coord(p.affineY)}","kid":"jca-1"}"""
    }

    override fun sign(message: ByteArray): ByteArray {
        // JOSE wants r||s (RFC 7518 §3.4): the JVM's P1363 format. DER is refused (J15).
        val alg = if (der) "SHA256withECDSA" else "SHA256withECDSAinP1363Format"
        return Signature.getInstance(alg).run {
            initSign(pair.private); update(message); sign()
        }
    }
}

/** A signer that fails the way a cancelled biometric prompt would. */
class CancelledSigner : Signer {
    private val inner = JcaSigner()
    override fun publicJwk(): String = inner.publicJwk()
    override fun sign(message: ByteArray): ByteArray =
        throw HeartgateException.SignerFailed("user_cancelled")
}

/** A signer that throws something unexpected. */
class BrokenSigner : Signer {
    private val inner = JcaSigner()
    override fun publicJwk(): String = inner.publicJwk()
    override fun sign(message: ByteArray): ByteArray = throw IllegalStateException("boom")
}

fun config() = ClientConfig(
    issuer = ISS, clientId = "clinic-app", redirectUri = CB,
    authorizationEndpoint = "$ISS/authorize", parEndpoint = "$ISS/par", tokenEndpoint = "$ISS/token",
)

fun params(challenge: String) = AuthorizationParams(
    scope = "openid", state = "st-1", codeChallenge = challenge, nonce = null, resource = listOf(),
)

/** The exception `block` throws, which must be a `T` (Debian's JUnit has no Kotlin helpers). */
inline fun <reified T : Throwable> expect(block: () -> Any?): T {
    try {
        block()
    } catch (e: Throwable) {
        if (e is T) return e
        throw AssertionError("expected ${T::class.simpleName}, got $e", e)
    }
    throw AssertionError("expected ${T::class.simpleName}, nothing was thrown")
}

fun payload(jwt: String): String = String(Base64.getUrlDecoder().decode(jwt.split(".")[1]))

class ApiTest {
    @Test fun coreVersionIsReported() {
        assertTrue(coreVersion().isNotEmpty())
    }

    @Test fun softwareSignerSignsJoseRs() {
        val s = softwareSigner(generateP256PrivateKey(), "k1")
        assertTrue(s.publicJwk().contains("\"kid\":\"k1\""))
        assertEquals(64, s.sign("hi".toByteArray()).size)
        val e = expect<HeartgateException.InvalidArgument> { softwareSigner("not a key", null) }
        assertEquals("private_key", e.reason)
    }

    @Test fun pkcePairIsS256() {
        val p = pkcePair()
        assertEquals(43, p.verifier.length)
        assertEquals("S256", p.method)
        val digest = java.security.MessageDigest.getInstance("SHA-256").digest(p.verifier.toByteArray())
        assertEquals(b64url(digest), p.challenge)
    }

    @Test fun rfc7523AssertionFromAKotlinSigner() {
        val c = FapiClient(config(), JcaSigner())
        val a = c.clientAssertion()
        assertTrue(payload(a).contains("\"sub\":\"clinic-app\""))
        assertTrue(String(Base64.getUrlDecoder().decode(a.split(".")[0])).contains("\"kid\":\"jca-1\""))
    }

    @Test fun j15DerSignatureFromTheAppIsRefused() {
        val c = FapiClient(config(), JcaSigner(der = true))
        val e = expect<HeartgateException.SignerFailed> { c.clientAssertion() }
        assertEquals("signature_does_not_verify", e.reason)
    }

    @Test fun signerErrorsCrossTheBoundaryTyped() {
        val e = expect<HeartgateException.SignerFailed> { FapiClient(config(), CancelledSigner()).clientAssertion() }
        assertEquals("user_cancelled", e.reason)
        val u = expect<HeartgateException.SignerFailed> { FapiClient(config(), BrokenSigner()).clientAssertion() }
        assertEquals("callback_error", u.reason)
    }

    @Test fun configErrorsAreInvalidArgument() {
        val e = expect<HeartgateException.InvalidArgument> {
            FapiClient(config().copy(issuer = "http://as.example"), JcaSigner())
        }
        assertEquals("issuer", e.reason)
    }

    @Test fun parRequestAndResponse() {
        val c = FapiClient(config(), softwareSigner(generateP256PrivateKey(), null))
        val post = c.parRequest(params(pkcePair().challenge))
        assertEquals("$ISS/par", post.url)
        assertEquals(listOf("client_id", "request", "client_assertion_type", "client_assertion"), post.fields.map { it.name })
        assertTrue(payload(c.requestObject(params(pkcePair().challenge))).contains("\"response_mode\":\"jwt\""))
        val ok = c.parseParResponse(201.toUShort(), """{"request_uri":"urn:x","expires_in":60}""")
        assertEquals("urn:x", ok.requestUri)
        val e = expect<HeartgateException.ServerException> {
            c.parseParResponse(400.toUShort(), """{"error":"invalid_request_object"}""")
        }
        assertEquals("invalid_request_object", e.error)
        assertEquals(400.toUShort(), e.status)
        expect<HeartgateException.InvalidArgument> { c.requestObject(params("short")) }
        assertTrue(c.authorizationUrl("urn:x").startsWith("$ISS/authorize?client_id=clinic-app&request_uri=urn"))
    }

    @Test fun a13MalformedJarmAndJwksAreTyped() {
        val c = FapiClient(config(), JcaSigner())
        val jwks = """{"keys":[${JcaSigner().publicJwk()}]}"""
        val v = expect<HeartgateException.VerificationFailed> {
            c.verifyAuthorizationResponse("$CB?response=a.b.c", "st-1", jwks)
        }
        assertEquals("malformed", v.reason)
        assertEquals("jarm_required", expect<HeartgateException.VerificationFailed> {
            c.verifyAuthorizationResponse("$CB?code=x&state=st-1", "st-1", jwks)
        }.reason)
        assertEquals("jwks", expect<HeartgateException.InvalidArgument> {
            c.verifyAuthorizationResponse("$CB?response=a.b.c", "st-1", "{\"keys\":[{\"kty\":\"oct\"}]}")
        }.reason)
    }

    @Test fun rfc9207PlainResponseNeedsIss() {
        val c = FapiClient(config(), JcaSigner())
        assertEquals("c1", c.verifyPlainAuthorizationResponse("$CB?code=c1&state=s&iss=$ISS", "s"))
        assertEquals("iss", expect<HeartgateException.VerificationFailed> {
            c.verifyPlainAuthorizationResponse("$CB?code=c1&state=s&iss=https://evil.example", "s")
        }.reason)
    }

    @Test fun tokenAndRefreshRequests() {
        val c = FapiClient(config(), JcaSigner())
        val p = pkcePair()
        val t = c.tokenRequest("code", p.verifier)
        assertTrue(t.body.contains("grant_type=authorization_code"))
        expect<HeartgateException.InvalidArgument> { c.tokenRequest("code", "short") }
        assertTrue(c.refreshRequest("rt").body.contains("grant_type=refresh_token"))
        expect<HeartgateException.InvalidArgument> { c.refreshRequest("") }
    }

    @Test fun tokenResponses() {
        val r = parseTokenResponse(200.toUShort(), """{"access_token":"at","token_type":"Bearer"}""")
        assertEquals("at", r.accessToken)
        assertNull(r.expiresIn)
        val e = expect<HeartgateException.ServerException> {
            parseTokenResponse(400.toUShort(), """{"error":"invalid_grant","error_description":"used"}""")
        }
        assertEquals("invalid_grant", e.error)
        assertEquals("used", e.description)
        expect<HeartgateException.VerificationFailed> { parseTokenResponse(200.toUShort(), "{}") }
    }

    @Test fun accessTokenValidatorErrors() {
        val jwks = """{"keys":[${JcaSigner().publicJwk()}]}"""
        val v = AccessTokenValidator(ISS, "https://fhir.example/r4", jwks)
        assertEquals("malformed", expect<HeartgateException.VerificationFailed> { v.validate("nope") }.reason)
        expect<HeartgateException.InvalidArgument> { AccessTokenValidator(ISS, "a", "[]") }
    }

    @Test fun x5tS256Errors() {
        assertEquals("certificate", expect<HeartgateException.InvalidArgument> { x5tS256(byteArrayOf(1, 2, 3)) }.reason)
        expect<HeartgateException.InvalidArgument> { x5tS256OfPem("nope") }
    }

    @Test fun cibaDeviceRequestsAndErrors() {
        val s = softwareSigner(generateP256PrivateKey(), null)
        val pair = devicePairingRequest(ISS, "ABCD2345", "Alice's phone", s)
        assertEquals("$ISS/device/pair", pair.url)
        assertTrue(pair.body.contains("\"code\":\"ABCD2345\""))
        val id = b64url(ByteArray(16) { 1 })
        assertEquals(id, parseDevicePairingResponse(201.toUShort(), """{"device_id":"$id"}"""))
        expect<HeartgateException.ServerException> { parseDevicePairingResponse(400.toUShort(), """{"error":"invalid_grant"}""") }
        val d = CibaDevice(ISS, id, s)
        val r = d.pendingRequestsRequest()
        assertEquals("GET", r.method)
        assertTrue(r.authorization.startsWith("Bearer "))
        val list = d.parsePendingRequests(200.toUShort(),
            """{"requests":[{"request_ref":"r","client_id":"c","scope":"openid","binding_message":"W4SCT","created_at":1,"expires_at":2}]}""")
        assertEquals("W4SCT", list[0].bindingMessage)
        val dec = d.decisionRequest(b64url(ByteArray(32) { 3 }), true, "W4SCT")
        assertTrue(payload(dec.authorization.removePrefix("Bearer ")).contains("binding_message_hash"))
        assertEquals(DeviceDecision.APPROVED, d.parseDecisionResponse(200.toUShort(), """{"decision":"approved"}"""))
        expect<HeartgateException.InvalidArgument> { d.decisionRequest("nope", true, null) }
        expect<HeartgateException.InvalidArgument> { CibaDevice(ISS, "short", s) }
    }

    @Test fun f3HugeAndNulInputsAreTypedExceptions() {
        val big = "a".repeat(10 * 1024 * 1024)
        expect<HeartgateException> { parseTokenResponse(200.toUShort(), big) }
        expect<HeartgateException> { softwareSigner("\u0000", null) }
    }
}
