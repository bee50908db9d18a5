//! OAuth scopes (RFC 6749 §3.3) with the SMART App Launch v2 grammar.
//!
//! A scope string is a set of scope tokens separated by single spaces; order does not
//! matter (OIDF `ensure-other-scope-order-succeeds`) and duplicates collapse. SMART
//! resource scopes are `(patient|user|system)/(ResourceType|*).<perms>[?constraints]`
//! where `<perms>` is a non-empty, in-order subset of `cruds`, or one of the v1 forms
//! `read` (= `rs`), `write` (= `cud`), `*` (= `cruds`). Context scopes: `launch`,
//! `launch/patient`, `launch/encounter`, lowercase `launch/<type>`; identity scopes
//! `openid`, `fhirUser`, `profile`; `offline_access`, `online_access`. Anything else is
//! refused ([`ScopeError::Unknown`] → `invalid_scope`), including `user/../Patient.r`,
//! `patient/Observation.dus` and empty tokens (THREATS A19).
//!
//! What it never does: widen. [`ScopeSet::narrow`] refuses a request for more than was
//! granted (R6); a refresh can only keep or reduce scope.

use std::collections::BTreeSet;
use std::fmt;

/// Longest scope string accepted, in bytes.
pub const MAX_SCOPE_LEN: usize = 4096;
/// Most scope tokens in one request.
pub const MAX_SCOPES: usize = 100;

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// Too long, too many tokens, an empty token or a character RFC 6749 forbids.
    #[error("malformed scope string")]
    Malformed,
    /// A token that is neither a SMART scope nor a known scope.
    #[error("unknown scope")]
    Unknown,
    /// A requested scope is not covered by the granted scopes.
    #[error("scope wider than granted")]
    Widening,
}

/// The compartment a SMART resource scope applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Compartment {
    /// `patient/`: the patient in context.
    Patient,
    /// `user/`: what the user may see.
    User,
    /// `system/`: a backend client acting on its own.
    System,
}

impl Compartment {
    fn as_str(self) -> &'static str {
        match self {
            Compartment::Patient => "patient",
            Compartment::User => "user",
            Compartment::System => "system",
        }
    }
}

/// SMART permissions: create, read, update, delete, search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permissions(u8);

impl Permissions {
    const LETTERS: [(char, u8); 5] = [('c', 1), ('r', 2), ('u', 4), ('d', 8), ('s', 16)];

    /// Parse the part after the dot.
    fn parse(s: &str) -> Option<Permissions> {
        match s {
            "read" => return Some(Permissions(2 | 16)),
            "write" => return Some(Permissions(1 | 4 | 8)),
            "*" => return Some(Permissions(31)),
            "" => return None,
            _ => {}
        }
        let mut bits = 0u8;
        let mut next = 0usize;
        for ch in s.chars() {
            let pos = Self::LETTERS[next..].iter().position(|(c, _)| *c == ch)?;
            bits |= Self::LETTERS[next + pos].1;
            next += pos + 1;
        }
        Some(Permissions(bits))
    }

    /// Whether every permission of `other` is in `self`.
    pub fn covers(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the operation letter (`c`, `r`, `u`, `d`, `s`) is allowed.
    pub fn allows(self, op: char) -> bool {
        Self::LETTERS
            .iter()
            .any(|(c, b)| *c == op && self.0 & b != 0)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (c, b) in Self::LETTERS {
            if self.0 & b != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// A SMART resource scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceScope {
    /// `patient`, `user` or `system`.
    pub compartment: Compartment,
    /// The FHIR resource type, or `None` for `*`.
    pub resource: Option<String>,
    /// The permissions.
    pub permissions: Permissions,
    /// The `?param=value&…` constraints, as written (without the `?`), if any.
    pub constraints: Option<String>,
}

impl ResourceScope {
    /// Whether this granted scope covers the requested `other`.
    pub fn covers(&self, other: &ResourceScope) -> bool {
        self.compartment == other.compartment
            && (self.resource.is_none() || self.resource == other.resource)
            && self.permissions.covers(other.permissions)
            && (self.constraints.is_none() || self.constraints == other.constraints)
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}.{}",
            self.compartment.as_str(),
            self.resource.as_deref().unwrap_or("*"),
            self.permissions
        )?;
        if let Some(c) = &self.constraints {
            write!(f, "?{c}")?;
        }
        Ok(())
    }
}

/// One scope token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// A SMART resource scope.
    Resource(ResourceScope),
    /// `launch`, `launch/patient`, `launch/encounter` or `launch/<type>` (the part after
    /// the slash; empty for bare `launch`).
    Launch(String),
    /// `openid`.
    OpenId,
    /// `fhirUser`.
    FhirUser,
    /// `profile`.
    Profile,
    /// `offline_access`.
    OfflineAccess,
    /// `online_access`.
    OnlineAccess,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Resource(r) => r.fmt(f),
            Scope::Launch(t) if t.is_empty() => f.write_str("launch"),
            Scope::Launch(t) => write!(f, "launch/{t}"),
            Scope::OpenId => f.write_str("openid"),
            Scope::FhirUser => f.write_str("fhirUser"),
            Scope::Profile => f.write_str("profile"),
            Scope::OfflineAccess => f.write_str("offline_access"),
            Scope::OnlineAccess => f.write_str("online_access"),
        }
    }
}

fn is_resource_type(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric())
}

fn valid_constraints(q: &str) -> bool {
    !q.is_empty()
        && q.split('&').all(|pair| match pair.split_once('=') {
            Some((k, v)) => {
                !k.is_empty()
                    && !v.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
                    && !v.contains('=')
            }
            None => false,
        })
}

impl std::str::FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, ScopeError> {
        // RFC 6749 §3.3 scope-token characters: %x21 / %x23-5B / %x5D-7E.
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
        {
            return Err(ScopeError::Malformed);
        }
        match s {
            "openid" => return Ok(Scope::OpenId),
            "fhirUser" => return Ok(Scope::FhirUser),
            "profile" => return Ok(Scope::Profile),
            "offline_access" => return Ok(Scope::OfflineAccess),
            "online_access" => return Ok(Scope::OnlineAccess),
            "launch" => return Ok(Scope::Launch(String::new())),
            _ => {}
        }
        if let Some(t) = s.strip_prefix("launch/") {
            if !t.is_empty() && t.chars().all(|c| c.is_ascii_lowercase()) {
                return Ok(Scope::Launch(t.to_owned()));
            }
            return Err(ScopeError::Unknown);
        }
        let (compartment, rest) = if let Some(r) = s.strip_prefix("patient/") {
            (Compartment::Patient, r)
        } else if let Some(r) = s.strip_prefix("user/") {
            (Compartment::User, r)
        } else if let Some(r) = s.strip_prefix("system/") {
            (Compartment::System, r)
        } else {
            return Err(ScopeError::Unknown);
        };
        let (body, constraints) = match rest.split_once('?') {
            Some((b, q)) if valid_constraints(q) => (b, Some(q.to_owned())),
            Some(_) => return Err(ScopeError::Unknown),
            None => (rest, None),
        };
        let (resource, perms) = body.split_once('.').ok_or(ScopeError::Unknown)?;
        let resource = match resource {
            "*" => None,
            r if is_resource_type(r) => Some(r.to_owned()),
            _ => return Err(ScopeError::Unknown),
        };
        let permissions = Permissions::parse(perms).ok_or(ScopeError::Unknown)?;
        Ok(Scope::Resource(ResourceScope {
            compartment,
            resource,
            permissions,
            constraints,
        }))
    }
}

/// A set of scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// Parse a space-separated scope string (empty means no scope).
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        if s.len() > MAX_SCOPE_LEN {
            return Err(ScopeError::Malformed);
        }
        if s.is_empty() {
            return Ok(ScopeSet::default());
        }
        let mut set = BTreeSet::new();
        for (i, token) in s.split(' ').enumerate() {
            if i >= MAX_SCOPES {
                return Err(ScopeError::Malformed);
            }
            set.insert(token.parse::<Scope>()?);
        }
        Ok(ScopeSet(set))
    }

    /// The scopes.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// Whether `scope` is in the set.
    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every scope of `requested` is covered by this set.
    pub fn covers(&self, requested: &ScopeSet) -> bool {
        requested.0.iter().all(|r| match r {
            Scope::Resource(rs) => self
                .0
                .iter()
                .any(|g| matches!(g, Scope::Resource(gs) if gs.covers(rs))),
            other => self.0.contains(other),
        })
    }

    /// R6: the scopes for a refresh or a downscoped request. `None` keeps the grant; a
    /// request for anything not covered is [`ScopeError::Widening`].
    pub fn narrow(&self, requested: Option<&str>) -> Result<ScopeSet, ScopeError> {
        match requested {
            None => Ok(self.clone()),
            Some(r) => {
                let r = ScopeSet::parse(r)?;
                if self.covers(&r) {
                    Ok(r)
                } else {
                    Err(ScopeError::Widening)
                }
            }
        }
    }

    /// Whether some resource scope allows `op` (`c`, `r`, `u`, `d`, `s`) on `resource`
    /// in `compartment`. Constrained scopes count: the resource server applies the
    /// constraints to the query.
    pub fn permits(&self, compartment: Compartment, resource: &str, op: char) -> bool {
        self.0.iter().any(|s| match s {
            Scope::Resource(r) => {
                r.compartment == compartment
                    && r.resource.as_deref().is_none_or(|t| t == resource)
                    && r.permissions.allows(op)
            }
            _ => false,
        })
    }

    /// Whether any `patient/` scope is present (SMART: a patient must be in context).
    pub fn needs_patient_context(&self) -> bool {
        self.0
            .iter()
            .any(|s| matches!(s, Scope::Resource(r) if r.compartment == Compartment::Patient))
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            s.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap()
    }

    #[test]
    fn smart_v2_scopes_parse() {
        let s = set("patient/Observation.rs user/*.cruds system/Patient.r launch/patient openid fhirUser offline_access");
        assert!(s.permits(Compartment::Patient, "Observation", 'r'));
        assert!(s.permits(Compartment::Patient, "Observation", 's'));
        assert!(!s.permits(Compartment::Patient, "Observation", 'c'));
        assert!(s.permits(Compartment::User, "Anything", 'd'));
        assert!(!s.permits(Compartment::System, "Observation", 'r'));
        assert!(s.needs_patient_context());
    }

    #[test]
    fn smart_v1_forms_map_to_v2_permissions() {
        assert_eq!(
            set("patient/Observation.read"),
            set("patient/Observation.rs")
        );
        assert_eq!(
            set("patient/Observation.write"),
            set("patient/Observation.cud")
        );
        assert_eq!(set("patient/*.*"), set("patient/*.cruds"));
    }

    #[test]
    fn a19_out_of_order_undefined_or_traversing_scopes_are_unknown() {
        for bad in [
            "patient/Observation.dus",
            "patient/Observation.rr",
            "patient/Observation.x",
            "patient/Observation.",
            "user/../Patient.r",
            "user/observation.r",
            "admin/Patient.r",
            "patient/Observation",
            "patient/Observation.rs?",
            "patient/Observation.rs?category",
            "launch/Patient",
            "launch/",
            "scope-of-another-kind",
        ] {
            assert_eq!(ScopeSet::parse(bad), Err(ScopeError::Unknown), "{bad}");
        }
    }

    #[test]
    fn a19_malformed_scope_strings_are_refused() {
        for bad in [
            "openid  fhirUser",
            " openid",
            "openid ",
            "open\"id",
            "a\\b",
            "openid\tfhirUser",
        ] {
            assert_eq!(ScopeSet::parse(bad), Err(ScopeError::Malformed), "{bad:?}");
        }
        let many = vec!["openid"; MAX_SCOPES + 1].join(" ");
        assert_eq!(ScopeSet::parse(&many), Err(ScopeError::Malformed));
        assert_eq!(
            ScopeSet::parse(&"a".repeat(MAX_SCOPE_LEN + 1)),
            Err(ScopeError::Malformed)
        );
    }

    #[test]
    fn a19_constraints_are_kept_and_grammar_checked() {
        let s = set("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory");
        assert!(s.permits(Compartment::Patient, "Observation", 'r'));
        assert!(ScopeSet::parse("patient/Observation.rs?category=a&category=b").is_ok());
        assert_eq!(
            ScopeSet::parse("patient/Observation.rs?=a"),
            Err(ScopeError::Unknown)
        );
        assert_eq!(
            ScopeSet::parse("patient/Observation.rs?a=b=c"),
            Err(ScopeError::Unknown)
        );
    }

    #[test]
    fn scope_order_and_duplicates_do_not_matter() {
        assert_eq!(
            set("openid patient/Observation.rs"),
            set("patient/Observation.rs openid openid")
        );
    }

    #[test]
    fn r6_narrowing_keeps_or_reduces_and_never_widens() {
        let granted = set("patient/Observation.rs patient/Patient.r openid offline_access");
        assert_eq!(granted.narrow(None), Ok(granted.clone()));
        assert_eq!(
            granted.narrow(Some("patient/Observation.r")),
            Ok(set("patient/Observation.r"))
        );
        for wider in [
            "patient/Observation.cruds",
            "patient/*.r",
            "user/Observation.r",
            "fhirUser",
            "patient/Condition.r",
        ] {
            assert_eq!(
                granted.narrow(Some(wider)),
                Err(ScopeError::Widening),
                "{wider}"
            );
        }
        let constrained = set("patient/Observation.rs?category=laboratory");
        assert_eq!(
            constrained.narrow(Some("patient/Observation.rs")),
            Err(ScopeError::Widening)
        );
        assert!(set("patient/*.cruds").covers(&set("patient/Observation.rs?category=laboratory")));
    }

    proptest! {
        /// THREATS §4.1 smart_scope oracle: parse ⇒ serialise ⇒ parse is a fixed point.
        #[test]
        fn serialisation_is_a_fixed_point(s in "(patient|user|system|launch|openid|x)(/[A-Za-z*.]{0,12}(\\.[cruds*a-z]{0,6})?)?") {
            if let Ok(a) = ScopeSet::parse(&s) {
                let text = a.to_string();
                let b = ScopeSet::parse(&text).unwrap();
                prop_assert_eq!(&a, &b);
                prop_assert_eq!(text, b.to_string());
            }
        }

        /// Property 4.2.6: a narrowed set is always covered by the grant.
        #[test]
        fn narrowing_never_widens(req in "(patient/(Observation|Patient|\\*)\\.(r|rs|cruds|s|c) ?){1,3}") {
            let granted = set("patient/Observation.rs patient/Patient.r");
            if let Ok(n) = granted.narrow(Some(req.trim())) {
                prop_assert!(granted.covers(&n));
            }
        }
    }
}
