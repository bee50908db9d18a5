//! The login and consent pages: server-rendered HTML, no script, every interpolated value
//! escaped (a client's name may hold HTML, D7). The consent page says in plain words
//! what each requested scope lets the app do.

use heartgate_core::scope::{Compartment, Scope, ScopeSet};

/// Escape text for HTML element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

fn resource_words(resource: Option<&str>) -> String {
    match resource {
        None => "health records of every kind".into(),
        Some(r) => {
            let words = match r {
                "Observation" => "lab results and vital signs",
                "Patient" => "demographic information",
                "Condition" => "conditions and diagnoses",
                "MedicationRequest" => "prescriptions",
                "MedicationStatement" => "medications",
                "AllergyIntolerance" => "allergies",
                "Immunization" => "immunizations",
                "Encounter" => "visits",
                "DiagnosticReport" => "test reports",
                "DocumentReference" => "documents",
                "Procedure" => "procedures",
                "CarePlan" => "care plans",
                "Appointment" => "appointments",
                "Practitioner" => "care team members",
                _ => "records",
            };
            format!("{words} ({r})")
        }
    }
}

/// One scope in plain words.
pub fn describe(scope: &Scope) -> String {
    match scope {
        Scope::OpenId => "Know who you are (your identity)".into(),
        Scope::FhirUser => "See your user record (for example your practitioner record)".into(),
        Scope::Profile => "See your name".into(),
        Scope::OfflineAccess => "Stay connected even when you are not using the app".into(),
        Scope::OnlineAccess => "Stay connected while you are using the app".into(),
        Scope::Launch(t) if t.is_empty() => "Open in the context of your current session".into(),
        Scope::Launch(t) if t == "patient" => "Know which patient you are working with".into(),
        Scope::Launch(t) if t == "encounter" => "Know which visit you are working in".into(),
        Scope::Launch(t) => format!("Know the current {}", escape(t)),
        Scope::Resource(r) => {
            let mut verbs = Vec::new();
            for (op, word) in [
                ('r', "read"),
                ('s', "search"),
                ('c', "create"),
                ('u', "update"),
                ('d', "delete"),
            ] {
                if r.permissions.allows(op) {
                    verbs.push(word);
                }
            }
            let verbs = match verbs.as_slice() {
                [] => "use".to_owned(),
                [one] => (*one).to_owned(),
                [init @ .., last] => format!("{} and {last}", init.join(", ")),
            };
            let mut v = verbs;
            if let Some(first) = v.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            let whose = match r.compartment {
                Compartment::Patient => "the patient's",
                Compartment::User => "the",
                Compartment::System => "all",
            };
            let mut s = format!(
                "{v} {whose} {}",
                escape(&resource_words(r.resource.as_deref()))
            );
            if r.compartment == Compartment::User {
                s.push_str(" you are allowed to see");
            }
            if let Some(c) = &r.constraints {
                s.push_str(&format!(" (only where {})", escape(c)));
            }
            s
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34em;margin:3em auto;padding:0 1em;color:#1b1b1b}h1{font-size:1.4em}label{display:block;margin:.8em 0 .2em}input[type=text],input[type=password]{width:100%;padding:.5em;font-size:1em}button{margin-top:1em;padding:.6em 1.4em;font-size:1em}.err{color:#a00}.note{color:#555;font-size:.9em}ul{padding-left:1.2em}li{margin:.3em 0}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    )
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        escape(name),
        escape(value)
    )
}

/// The login form. `error` is shown as is (a fixed message, never echoing input).
pub fn login(client_name: &str, interaction: &str, csrf: &str, error: Option<&str>) -> String {
    login_form(
        "/login",
        &format!(
            "<p><strong>{}</strong> asks you to sign in.</p>",
            escape(client_name)
        ),
        &[("interaction", interaction), ("csrf", csrf)],
        error,
    )
}

/// A sign-in form posting to `action`: `intro` (HTML, already escaped), hidden fields,
/// and the failure message if any.
fn login_form(action: &str, intro: &str, fields: &[(&str, &str)], error: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<p class=\"err\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let hidden_fields: String = fields.iter().map(|(k, v)| hidden(k, v)).collect();
    page(
        "Sign in — heartgate",
        &format!(
            "<h1>Sign in</h1>{intro}{err}<form method=\"post\" action=\"{}\">{hidden_fields}<label for=\"username\">Username</label><input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" required><label for=\"password\">Password</label><input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required><button type=\"submit\" id=\"sign-in\">Sign in</button></form>",
            escape(action),
        ),
    )
}

/// What the consent page shows.
pub struct Consent<'a> {
    /// The client's name (or id).
    pub client_name: &'a str,
    /// Whether the client registered itself (HEART §3.2: the user must be told).
    pub dynamically_registered: bool,
    /// The requested scopes.
    pub scopes: &'a ScopeSet,
    /// Patients the user may choose from, as (id, label), when a patient is needed.
    pub patients: &'a [(String, String)],
    /// The pending interaction.
    pub interaction: &'a str,
    /// CSRF token.
    pub csrf: &'a str,
    /// The signed-in user's display name.
    pub user: &'a str,
}

/// The consent page.
pub fn consent(c: &Consent<'_>) -> String {
    let mut items = String::new();
    let mut scopes: Vec<&Scope> = c.scopes.iter().collect();
    scopes.sort_by_key(|s| s.to_string());
    for s in scopes {
        items.push_str(&format!(
            "<li>{} <span class=\"note\">({})</span></li>",
            describe(s),
            escape(&s.to_string())
        ));
    }
    let dynamic = if c.dynamically_registered {
        "<p class=\"note\">This app registered itself with this server; the hospital has not reviewed it.</p>"
    } else {
        ""
    };
    let patients = if c.patients.is_empty() {
        String::new()
    } else {
        let mut opts = String::new();
        for (i, (id, label)) in c.patients.iter().enumerate() {
            opts.push_str(&format!(
                "<label><input type=\"radio\" name=\"patient\" value=\"{}\"{}> {}</label>",
                escape(id),
                if i == 0 { " checked" } else { "" },
                escape(label)
            ));
        }
        format!("<fieldset><legend>Which patient?</legend>{opts}</fieldset>")
    };
    page(
        "Allow access? — heartgate",
        &format!(
            "<h1>Allow <strong>{}</strong> to:</h1>{dynamic}<ul>{items}</ul><p class=\"note\">Signed in as {}.</p><form method=\"post\" action=\"/consent\">{}{}{patients}<label class=\"note\"><input type=\"checkbox\" name=\"remember\" value=\"1\" id=\"remember\"> Remember this choice for this application (90 days)</label><button type=\"submit\" name=\"decision\" value=\"allow\" id=\"allow\">Allow</button> <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button></form>",
            escape(c.client_name),
            escape(c.user),
            hidden("interaction", c.interaction),
            hidden("csrf", c.csrf),
        ),
    )
}

/// One CIBA request on the approval page.
#[derive(Debug, Clone)]
pub struct CibaItem {
    /// The request's reference (base64url), what the decision names.
    pub request: String,
    /// CSRF token of its form.
    pub csrf: String,
    /// The asking client's name (or id).
    pub client: String,
    /// Requested scopes.
    pub scope: String,
    /// The binding message, shown verbatim (escaped) so the user can compare it with the
    /// one on the caller's screen (CIBA §7.1).
    pub binding_message: Option<String>,
    /// Hash of that message, sent back with the decision.
    pub binding_hash: Option<String>,
}

/// The CIBA sign-in form (the user signs in to review requests made for them).
pub fn ciba_login(csrf: &str, error: Option<&str>) -> String {
    login_form(
        "/ciba/login",
        "<p>Sign in to review the sign-in requests made for you.</p>",
        &[("csrf", csrf)],
        error,
    )
}

/// The signed-in user's pending CIBA requests, each with Approve and Deny.
pub fn ciba_requests(user: &str, items: &[CibaItem]) -> String {
    let mut list = String::new();
    for it in items {
        let scopes: Vec<String> = it
            .scope
            .split(' ')
            .filter_map(|s| s.parse::<Scope>().ok())
            .map(|s| format!("<li>{}</li>", escape(&describe(&s))))
            .collect();
        let message = it.binding_message.as_deref().map_or_else(
            || "<p>No code was given with this request.</p>".to_owned(),
            |m| {
                format!(
                    "<p>Check that this code is the one you were told: <strong class=\"binding\">{}</strong></p>",
                    escape(m)
                )
            },
        );
        list.push_str(&format!(
            "<section class=\"ciba-request\"><h2><strong>{}</strong> asks to sign you in</h2>{message}<ul>{}</ul><form method=\"post\" action=\"/ciba/decide\">{}{}{}<button type=\"submit\" name=\"decision\" value=\"approve\" class=\"approve\">Approve</button><button type=\"submit\" name=\"decision\" value=\"deny\" class=\"deny\">Deny</button></form></section>",
            escape(&it.client),
            scopes.concat(),
            hidden("request", &it.request),
            hidden("csrf", &it.csrf),
            it.binding_hash.as_deref().map(|h| hidden("binding", h)).unwrap_or_default(),
        ));
    }
    if items.is_empty() {
        list.push_str("<p id=\"none\">No sign-in requests are waiting for you.</p>");
    }
    page(
        "Sign-in requests — heartgate",
        &format!(
            "<h1>Sign-in requests</h1><p>Signed in as <strong>{}</strong>.</p>{list}",
            escape(user)
        ),
    )
}

/// After a decision.
pub fn ciba_done(approved: bool) -> String {
    let what = if approved {
        "You approved the request. You can close this page."
    } else {
        "You denied the request. You can close this page."
    };
    page(
        "Done — heartgate",
        &format!(
            "<h1>Done</h1><p id=\"done\">{what}</p><p><a href=\"/ciba\">Other requests</a></p>"
        ),
    )
}

/// One paired device on the devices page.
#[derive(Debug, Clone)]
pub struct DeviceItem {
    /// Its id.
    pub device_id: String,
    /// The name given at pairing.
    pub name: String,
    /// When it was paired (Unix seconds).
    pub created_at: i64,
    /// CSRF token of its remove form.
    pub csrf: String,
}

/// The user's paired devices, with a form to pair another and one to remove each.
pub fn devices(items: &[DeviceItem], pair_csrf: &str) -> String {
    let mut list = String::new();
    for d in items {
        list.push_str(&format!(
            "<li class=\"device\"><strong>{}</strong> <span class=\"note\">(paired at {} UTC)</span><form method=\"post\" action=\"/ciba/devices/remove\">{}{}<button type=\"submit\" class=\"deny\">Remove</button></form></li>",
            escape(&d.name),
            escape(&utc(d.created_at)),
            hidden("device", &d.device_id),
            hidden("csrf", &d.csrf),
        ));
    }
    let list = if items.is_empty() {
        "<p id=\"no-devices\">No device is paired yet.</p>".to_owned()
    } else {
        format!("<ul>{list}</ul>")
    };
    page(
        "Your devices — heartgate",
        &format!(
            "<h1>Your devices</h1><p>A paired phone receives sign-in requests made for you and lets you approve them.</p>{list}<form method=\"post\" action=\"/ciba/devices/pair\">{}<button type=\"submit\" id=\"pair\">Pair a device</button></form>",
            hidden("csrf", pair_csrf)
        ),
    )
}

/// A pairing code to enter in the app.
pub fn pairing_code(code: &str) -> String {
    page(
        "Pair a device — heartgate",
        &format!(
            "<h1>Pair a device</h1><p>Enter this code in the app on your phone within 5 minutes. It works once.</p><p class=\"binding\" id=\"pairing-code\">{}</p><p><a href=\"/ciba/devices\">Back to your devices</a></p>",
            escape(code)
        ),
    )
}

/// `YYYY-MM-DD HH:MM` of a Unix time (UTC).
fn utc(t: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute()
        ),
        Err(_) => t.to_string(),
    }
}

/// An error page (the request cannot go back to the client).
pub fn error(message: &str) -> String {
    page(
        "Error — heartgate",
        &format!(
            "<h1>This request cannot be completed</h1><p class=\"err\">{}</p>",
            escape(message)
        ),
    )
}

/// The `form_post.jwt` response: a form that posts itself back to the client. Without
/// script (the CSP forbids it) the user presses the button; a browser with script
/// disabled still works.
pub fn form_post(action: &str, fields: &[(String, String)]) -> String {
    let mut inputs = String::new();
    for (k, v) in fields {
        inputs.push_str(&hidden(k, v));
    }
    page(
        "Continue — heartgate",
        &format!(
            "<form method=\"post\" action=\"{}\">{inputs}<p>Return to the application.</p><button type=\"submit\" id=\"continue\">Continue</button></form>",
            escape(action)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d7_client_names_and_values_are_escaped() {
        let s = ScopeSet::parse("openid").unwrap();
        let html = consent(&Consent {
            client_name: "<script>alert(1)</script>",
            dynamically_registered: true,
            scopes: &s,
            patients: &[("Patient/1\"><b>".into(), "<i>x</i>".into())],
            interaction: "urn:x\"",
            csrf: "t",
            user: "&",
        });
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<i>x</i>"));
        assert!(html.contains("registered itself"));
        assert!(!html.contains("value=\"urn:x\"\""));
    }

    #[test]
    fn scopes_read_as_plain_words() {
        let s = ScopeSet::parse(
            "patient/Observation.rs user/MedicationRequest.cruds openid offline_access launch/patient patient/*.r",
        )
        .unwrap();
        let words: Vec<String> = s.iter().map(describe).collect();
        assert!(words.contains(
            &"Read and search the patient's lab results and vital signs (Observation)".to_owned()
        ));
        assert!(words.contains(&"Know who you are (your identity)".to_owned()));
        assert!(words.contains(&"Know which patient you are working with".to_owned()));
        assert!(words.contains(&"Read the patient's health records of every kind".to_owned()));
        assert!(words
            .iter()
            .any(|w| w.starts_with("Read, search, create, update and delete the prescriptions")));
    }
}
