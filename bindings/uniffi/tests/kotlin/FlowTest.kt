// The full FAPI 2.0 Message Signing flow from Kotlin against a real heartgate server
// (started by tests/mobile.sh, which passes -Dheartgate.server.props): dynamic
// registration with the app's key → PAR with a signed request object over mTLS (RFC 9126,
// RFC 9101) → login and consent driven over HTTP → JARM verified in Kotlin (JARM §4.4,
// RFC 9207) → code exchange with PKCE (RFC 7636) → the bound access token validated
// offline (RFC 9068, RFC 8705 §3.1). The HTTP is the app's (java.net.http here, OkHttp
// or URLSession in an app); the bindings build the requests and check the responses.
package health.heartgate.tests

import health.heartgate.*
import java.io.File
import java.io.FileInputStream
import java.net.URI
import java.net.URLEncoder
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.security.KeyFactory
import java.security.KeyStore
import java.security.cert.CertificateFactory
import java.security.cert.X509Certificate
import java.security.spec.PKCS8EncodedKeySpec
import java.time.Duration
import java.util.Base64
import java.util.Properties
import javax.net.ssl.KeyManagerFactory
import javax.net.ssl.SSLContext
import javax.net.ssl.TrustManagerFactory
import org.junit.jupiter.api.Assertions.*
import org.junit.jupiter.api.Assumptions.assumeTrue
import org.junit.jupiter.api.Test

class FlowTest {
    private val props: Properties? = System.getProperty("heartgate.server.props")?.let { p ->
        Properties().apply { FileInputStream(p).use { load(it) } }
    }
    private fun prop(name: String): String = props!!.getProperty(name) ?: error("no $name")

    private fun pemBody(path: String): ByteArray =
        Base64.getMimeDecoder().decode(File(path).readText().lines().filter { !it.startsWith("-----") }.joinToString(""))

    /** TLS trusting only the server's development CA, presenting the app's certificate. */
    private fun ssl(): Pair<SSLContext, X509Certificate> {
        val cf = CertificateFactory.getInstance("X.509")
        val ca = File(prop("ca")).inputStream().use { cf.generateCertificate(it) }
        val trust = KeyStore.getInstance(KeyStore.getDefaultType()).apply { load(null); setCertificateEntry("heartgate-dev-ca", ca) }
        val tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm()).apply { init(trust) }
        val cert = File(prop("client_cert")).inputStream().use { cf.generateCertificate(it) } as X509Certificate
        val key = KeyFactory.getInstance("EC").generatePrivate(PKCS8EncodedKeySpec(pemBody(prop("client_key"))))
        val pw = CharArray(0)
        val ks = KeyStore.getInstance("PKCS12").apply { load(null); setKeyEntry("app", key, pw, arrayOf(cert)) }
        val kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm()).apply { init(ks, pw) }
        val ctx = SSLContext.getInstance("TLS").apply { init(kmf.keyManagers, tmf.trustManagers, null) }
        return ctx to cert
    }

    private lateinit var http: HttpClient

    private fun send(req: HttpRequest.Builder): HttpResponse<String> =
        http.send(req.timeout(Duration.ofSeconds(20)).build(), HttpResponse.BodyHandlers.ofString())

    private fun get(url: String, cookie: String? = null) =
        send(HttpRequest.newBuilder(URI(url)).GET().apply { if (cookie != null) header("Cookie", cookie) })

    private fun form(url: String, body: String, cookie: String? = null) =
        send(HttpRequest.newBuilder(URI(url)).header("Content-Type", "application/x-www-form-urlencoded")
            .apply { if (cookie != null) header("Cookie", cookie) }
            .POST(HttpRequest.BodyPublishers.ofString(body)))

    private fun enc(vararg kv: Pair<String, String>) =
        kv.joinToString("&") { (k, v) -> URLEncoder.encode(k, "UTF-8") + "=" + URLEncoder.encode(v, "UTF-8") }

    private fun hidden(html: String, name: String): String =
        Regex("name=\"$name\" value=\"([^\"]*)\"").find(html)?.groupValues?.get(1)
            ?.replace("&quot;", "\"")?.replace("&#x27;", "'")?.replace("&lt;", "<")?.replace("&gt;", ">")?.replace("&amp;", "&")
            ?: error("no hidden input $name")

    private fun cookie(r: HttpResponse<String>, name: String): String =
        r.headers().allValues("set-cookie").map { it.substringBefore(';') }.first { it.startsWith("$name=") }

    private fun location(r: HttpResponse<String>): String {
        assertEquals(303, r.statusCode(), r.body())
        return r.headers().firstValue("location").get()
    }

    @Test
    fun fapi2MessageSigningFlowAgainstARealServer() {
        assumeTrue(props != null, "run by tests/mobile.sh, which starts the server")
        val (sslContext, cert) = ssl()
        http = HttpClient.newBuilder().sslContext(sslContext).followRedirects(HttpClient.Redirect.NEVER).build()
        val issuer = prop("issuer")
        val redirect = "https://clinic.example/cb"
        val signer = softwareSigner(generateP256PrivateKey(), null)

        // Dynamic registration (RFC 7591) with the app's public key and certificate binding.
        val reg = send(HttpRequest.newBuilder(URI("$issuer/register"))
            .header("Authorization", "Bearer ${prop("initial_access_token")}")
            .header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString("""{"profile":"fapi2-message-signing",
                "client_name":"Kotlin clinic app","redirect_uris":["$redirect"],
                "token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[${signer.publicJwk()}]},
                "grant_types":["authorization_code","refresh_token"],
                "require_pushed_authorization_requests":true,
                "tls_client_certificate_bound_access_tokens":true,
                "request_object_signing_alg":"ES256","authorization_signed_response_alg":"ES256",
                "scope":"openid offline_access launch/patient patient/Observation.rs"}""")))
        assertEquals(201, reg.statusCode(), reg.body())
        val clientId = Regex("\"client_id\"\\s*:\\s*\"([^\"]+)\"").find(reg.body())!!.groupValues[1]

        val client = FapiClient(ClientConfig(issuer = issuer, clientId = clientId, redirectUri = redirect,
            authorizationEndpoint = "$issuer/authorize", parEndpoint = "$issuer/par", tokenEndpoint = "$issuer/token"), signer)
        val pkce = pkcePair()
        val state = b64url(java.security.SecureRandom().generateSeed(16))

        // PAR with the signed request object and a private_key_jwt assertion, over mTLS.
        val par = client.parRequest(AuthorizationParams(
            scope = "openid offline_access launch/patient patient/Observation.rs", state = state,
            codeChallenge = pkce.challenge, nonce = "n-1", resource = listOf()))
        val parResp = form(par.url, par.body)
        val pushed = client.parseParResponse(parResp.statusCode().toUShort(), parResp.body())
        assertTrue(pushed.requestUri.startsWith("urn:ietf:params:oauth:request_uri:"))

        // The browser part, driven over HTTP: authorize → login → consent.
        val login = location(get(client.authorizationUrl(pushed.requestUri)))
        val page = get(issuer + login)
        assertEquals(200, page.statusCode())
        val pre = cookie(page, "__Host-hg_pre")
        val signedIn = form("$issuer/login", enc("interaction" to hidden(page.body(), "interaction"),
            "csrf" to hidden(page.body(), "csrf"), "username" to prop("username"), "password" to prop("password")), pre)
        val session = cookie(signedIn, "__Host-hg_session")
        val consentPage = get(issuer + location(signedIn), session)
        assertEquals(200, consentPage.statusCode(), consentPage.body())
        val done = form("$issuer/consent", enc("interaction" to hidden(consentPage.body(), "interaction"),
            "csrf" to hidden(consentPage.body(), "csrf"), "patient" to "Patient/123", "decision" to "allow"), session)
        val back = location(done)
        assertTrue(back.startsWith("$redirect?response="), back)

        // JARM verified in Kotlin against the AS's published keys; a wrong state is refused.
        val jwks = get("$issuer/jwks").body()
        assertEquals("state", expect<HeartgateException.VerificationFailed> {
            client.verifyAuthorizationResponse(back, "another-state", jwks)
        }.reason)
        val code = client.verifyAuthorizationResponse(back, state, jwks)

        // Code exchange with the PKCE verifier and a fresh assertion, same certificate.
        val tokenReq = client.tokenRequest(code, pkce.verifier)
        val tokenResp = form(tokenReq.url, tokenReq.body)
        val tokens = parseTokenResponse(tokenResp.statusCode().toUShort(), tokenResp.body())
        assertEquals("Patient/123", tokens.patient)
        assertNotNull(tokens.refreshToken)

        // The access token validated offline, and bound to the app's certificate.
        val at = AccessTokenValidator(issuer, prop("audience"), jwks).validate(tokens.accessToken)
        assertEquals(TokenFormat.JWT, at.format)
        assertEquals(clientId, at.clientId)
        assertEquals(issuer, at.iss)
        assertEquals(x5tS256(cert.encoded), at.x5tS256)

        // A13/A1: the code is single-use; the server's error arrives typed.
        val again = client.tokenRequest(code, pkce.verifier)
        val replay = form(again.url, again.body)
        val e = expect<HeartgateException.ServerException> {
            parseTokenResponse(replay.statusCode().toUShort(), replay.body())
        }
        assertEquals("invalid_grant", e.error)
    }

    private fun bearer(r: DeviceRequest): HttpResponse<String> =
        send(HttpRequest.newBuilder(URI(r.url)).header("Authorization", r.authorization).apply {
            if (r.method == "POST") POST(HttpRequest.BodyPublishers.noBody()) else GET()
        })

    @Test
    fun cibaAuthenticationDeviceApprovesAgainstARealServer() {
        assumeTrue(props != null, "run by tests/mobile.sh, which starts the server")
        http = HttpClient.newBuilder().sslContext(ssl().first).followRedirects(HttpClient.Redirect.NEVER).build()
        val issuer = prop("issuer")

        // The user signs in on the approval page and asks for a pairing code.
        val page = get("$issuer/ciba")
        val signedIn = form("$issuer/ciba/login", enc("csrf" to hidden(page.body(), "csrf"),
            "username" to prop("username"), "password" to prop("password")), cookie(page, "__Host-hg_pre"))
        assertEquals(303, signedIn.statusCode(), signedIn.body())
        val session = cookie(signedIn, "__Host-hg_session")
        val devices = get("$issuer/ciba/devices", session)
        val shown = form("$issuer/ciba/devices/pair", enc("csrf" to hidden(devices.body(), "csrf")), session)
        assertEquals(200, shown.statusCode(), shown.body())
        val code = Regex("id=\"pairing-code\">([^<]{8})").find(shown.body())!!.groupValues[1]

        // The phone pairs with the code and its own key (here a software key).
        val phoneKey = softwareSigner(generateP256PrivateKey(), null)
        val pair = devicePairingRequest(issuer, code, "Nurse's phone", phoneKey)
        val paired = send(HttpRequest.newBuilder(URI(pair.url)).header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(pair.body)))
        val deviceId = parseDevicePairingResponse(paired.statusCode().toUShort(), paired.body())
        val phone = CibaDevice(issuer, deviceId, phoneKey)
        // The code is single-use: the server's error arrives typed.
        val again = send(HttpRequest.newBuilder(URI(pair.url)).header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(pair.body)))
        assertEquals("invalid_grant", expect<HeartgateException.ServerException> {
            parseDevicePairingResponse(again.statusCode().toUShort(), again.body())
        }.error)

        // A CIBA client (CIBA Core §7.1) asks for the nurse, with a binding message.
        val clinic = FapiClient(ClientConfig(issuer = issuer, clientId = prop("ciba_client_id"),
            redirectUri = "https://clinic.example/cb", authorizationEndpoint = "$issuer/authorize",
            parEndpoint = "$issuer/par", tokenEndpoint = "$issuer/token"),
            softwareSigner(File(prop("ciba_client_key")).readText(), null))
        val assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        val started = form("$issuer/bc-authorize", enc("scope" to "openid", "login_hint" to prop("username"),
            "binding_message" to "KOTLIN-7", "client_assertion_type" to assertionType,
            "client_assertion" to clinic.clientAssertion()))
        assertEquals(200, started.statusCode(), started.body())
        val authReqId = Regex("\"auth_req_id\"\\s*:\\s*\"([^\"]+)\"").find(started.body())!!.groupValues[1]
        val poll = { form("$issuer/token", enc("grant_type" to "urn:openid:params:grant-type:ciba",
            "auth_req_id" to authReqId, "client_assertion_type" to assertionType,
            "client_assertion" to clinic.clientAssertion())) }
        val pending = poll()
        assertEquals("authorization_pending", expect<HeartgateException.ServerException> {
            parseTokenResponse(pending.statusCode().toUShort(), pending.body())
        }.error)

        // The phone lists what waits for its user and approves over the message it shows.
        val listed = bearer(phone.pendingRequestsRequest())
        val waiting = phone.parsePendingRequests(listed.statusCode().toUShort(), listed.body())
        val mine = waiting.single { it.bindingMessage == "KOTLIN-7" }
        assertEquals("Riverside Clinic", mine.clientName)
        // B14: a decision over another message is refused by the server.
        val wrong = bearer(phone.decisionRequest(mine.requestRef, true, "OTHER-1"))
        expect<HeartgateException.ServerException> { phone.parseDecisionResponse(wrong.statusCode().toUShort(), wrong.body()) }
        val decided = bearer(phone.decisionRequest(mine.requestRef, true, mine.bindingMessage))
        assertEquals(DeviceDecision.APPROVED, phone.parseDecisionResponse(decided.statusCode().toUShort(), decided.body()))

        // The client's next poll gets the tokens.
        val done = poll()
        val tokens = parseTokenResponse(done.statusCode().toUShort(), done.body())
        val at = AccessTokenValidator(issuer, prop("audience"), get("$issuer/jwks").body()).validate(tokens.accessToken)
        assertEquals(prop("ciba_client_id"), at.clientId)
    }
}
