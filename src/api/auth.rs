//! Which tenant a request may see: `X-Scope-OrgID`, and tenant-scoped bearer tokens
//! (`tally serve --tenant-tokens FILE`).
//!
//! Rules ([`request_tenant`]):
//! - Without a token file, `X-Scope-OrgID` (if present) scopes the request; no header means
//!   all tenants. An `Authorization` header is ignored.
//! - With a token file, every request to a wired endpoint needs `Authorization: Bearer
//!   <token>`: missing → 401, unknown token → 401. A token mapped to a tenant scopes the
//!   request to that tenant; an `X-Scope-OrgID` naming another tenant → 403 (the same
//!   tenant is accepted). A token mapped to `*` is unscoped (an operator token): the
//!   request sees all tenants, or the one named by `X-Scope-OrgID`.
//!
//! Endpoints call [`request_tenant`] with the server's [`TenantTokens`] and turn an
//! [`AuthError`] into a response with [`AuthError::status`]. The SQL and ledger endpoints
//! use it; other endpoints can adopt it the same way.
//!
//! Token file: TOML (`[tokens]` table of `"token" = "tenant"`), or CSV (`token,tenant` per
//! line, `#` comments, optional `token,tenant` header) when the file name ends in `.csv`.

use std::collections::BTreeSet;
use std::path::Path;

use axum::http::{header, HeaderMap, StatusCode};

/// The `X-Scope-OrgID` header (lower case, as axum stores names).
pub const SCOPE_HEADER: &str = "x-scope-orgid";
/// A token mapped to this value may see every tenant.
pub const ALL_TENANTS: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    Tenant(String),
    All,
}

/// Bearer token → tenant.
#[derive(Debug, Clone, Default)]
pub struct TenantTokens {
    entries: Vec<(String, TokenScope)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading tenant token file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tenant token file {path}: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlTokens {
    tokens: std::collections::BTreeMap<String, String>,
}

impl TenantTokens {
    /// Loads a token file (CSV when the name ends in `.csv`, else TOML).
    pub fn load(path: &Path) -> Result<TenantTokens, TokenFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io {
            path: p.clone(),
            source,
        })?;
        let csv = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let parsed = if csv {
            TenantTokens::parse_csv(&text)
        } else {
            TenantTokens::parse_toml(&text)
        };
        parsed.map_err(|reason| TokenFileError::Invalid { path: p, reason })
    }

    /// `[tokens]` table of `"token" = "tenant"`.
    pub fn parse_toml(text: &str) -> Result<TenantTokens, String> {
        let t: TomlTokens = toml::from_str(text).map_err(|e| e.to_string())?;
        TenantTokens::from_pairs(t.tokens.into_iter().map(|(k, v)| (k, v, 0)))
    }

    /// `token,tenant` lines; `#` starts a comment line; a first line `token,tenant` is a header.
    pub fn parse_csv(text: &str) -> Result<TenantTokens, String> {
        let mut pairs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((tok, tenant)) = line.split_once(',') else {
                return Err(format!("line {}: expected `token,tenant`", i + 1));
            };
            let (tok, tenant) = (tok.trim(), tenant.trim());
            if pairs.is_empty() && tok.eq_ignore_ascii_case("token") && tenant.eq_ignore_ascii_case("tenant") {
                continue;
            }
            pairs.push((tok.to_string(), tenant.to_string(), i + 1));
        }
        TenantTokens::from_pairs(pairs.into_iter())
    }

    fn from_pairs(pairs: impl Iterator<Item = (String, String, usize)>) -> Result<TenantTokens, String> {
        let mut entries = Vec::new();
        let mut seen = BTreeSet::new();
        for (tok, tenant, line) in pairs {
            let at = if line > 0 {
                format!("line {line}: ")
            } else {
                String::new()
            };
            if tok.is_empty() || tok.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("{at}a token must be non-empty, without spaces"));
            }
            if tenant.is_empty() || tenant.contains(',') {
                return Err(format!("{at}token maps to an empty or invalid tenant {tenant:?}"));
            }
            if !seen.insert(tok.clone()) {
                return Err(format!("{at}a token is listed twice"));
            }
            let scope = if tenant == ALL_TENANTS {
                TokenScope::All
            } else {
                TokenScope::Tenant(tenant)
            };
            entries.push((tok, scope));
        }
        if entries.is_empty() {
            return Err("no tokens (an empty file would lock every client out)".into());
        }
        Ok(TenantTokens { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The scope of `token`. Compares against every entry without stopping early.
    pub fn lookup(&self, token: &str) -> Option<&TokenScope> {
        let mut found = None;
        for (t, s) in &self.entries {
            if ct_eq(t.as_bytes(), token.as_bytes()) {
                found = Some(s);
            }
        }
        found
    }
}

/// Equality whose time does not depend on where the inputs first differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("X-Scope-OrgID must be a non-empty tenant name")]
    BadScopeHeader,
    #[error("this server requires `Authorization: Bearer <token>` (tenant-scoped tokens)")]
    MissingToken,
    #[error("the Authorization header must be `Bearer <token>`")]
    BadAuthorization,
    #[error("unknown bearer token")]
    UnknownToken,
    #[error("the bearer token is scoped to tenant {token_tenant:?}, but X-Scope-OrgID asks for {header:?}")]
    TenantMismatch { token_tenant: String, header: String },
}

impl AuthError {
    /// 400 for a malformed scope header, 401 for missing/bad/unknown tokens, 403 for a
    /// token used for another tenant.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::BadScopeHeader => StatusCode::BAD_REQUEST,
            AuthError::MissingToken | AuthError::BadAuthorization | AuthError::UnknownToken => StatusCode::UNAUTHORIZED,
            AuthError::TenantMismatch { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// Prometheus-style `errorType`.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::BadScopeHeader => "bad_data",
            AuthError::MissingToken | AuthError::BadAuthorization | AuthError::UnknownToken => "unauthorized",
            AuthError::TenantMismatch { .. } => "forbidden",
        }
    }
}

fn scope_header(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    match headers.get(SCOPE_HEADER) {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
            _ => Err(AuthError::BadScopeHeader),
        },
    }
}

fn bearer(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| AuthError::BadAuthorization)?.trim();
    let (scheme, tok) = v.split_once(' ').ok_or(AuthError::BadAuthorization)?;
    let tok = tok.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || tok.is_empty() {
        return Err(AuthError::BadAuthorization);
    }
    Ok(Some(tok.to_string()))
}

/// The tenant a request is restricted to (`None` = all tenants), per the module rules.
pub fn request_tenant(headers: &HeaderMap, tokens: Option<&TenantTokens>) -> Result<Option<String>, AuthError> {
    let scope = scope_header(headers)?;
    let Some(tokens) = tokens else {
        return Ok(scope);
    };
    let tok = bearer(headers)?.ok_or(AuthError::MissingToken)?;
    match tokens.lookup(&tok).ok_or(AuthError::UnknownToken)? {
        TokenScope::All => Ok(scope),
        TokenScope::Tenant(t) => match scope {
            Some(h) if &h != t => Err(AuthError::TenantMismatch {
                token_tenant: t.clone(),
                header: h,
            }),
            _ => Ok(Some(t.clone())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn rules() {
        let t = TenantTokens::parse_toml("[tokens]\n\"tok-a\" = \"acme\"\n\"ops\" = \"*\"\n").unwrap();
        assert_eq!(t.len(), 2);
        // No token file: the header alone decides.
        assert_eq!(request_tenant(&h(&[]), None), Ok(None));
        assert_eq!(
            request_tenant(&h(&[("x-scope-orgid", "b")]), None),
            Ok(Some("b".into()))
        );
        assert_eq!(
            request_tenant(&h(&[("x-scope-orgid", " ")]), None),
            Err(AuthError::BadScopeHeader)
        );
        // With tokens.
        let t = Some(&t);
        assert_eq!(request_tenant(&h(&[]), t), Err(AuthError::MissingToken));
        assert_eq!(
            request_tenant(&h(&[("authorization", "Bearer nope")]), t),
            Err(AuthError::UnknownToken)
        );
        assert_eq!(
            request_tenant(&h(&[("authorization", "Basic tok-a")]), t),
            Err(AuthError::BadAuthorization)
        );
        assert_eq!(
            request_tenant(&h(&[("authorization", "Bearer tok-a")]), t),
            Ok(Some("acme".into()))
        );
        assert_eq!(
            request_tenant(&h(&[("authorization", "bearer tok-a"), ("x-scope-orgid", "acme")]), t),
            Ok(Some("acme".into()))
        );
        let e = request_tenant(&h(&[("authorization", "Bearer tok-a"), ("x-scope-orgid", "other")]), t).unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(request_tenant(&h(&[("authorization", "Bearer ops")]), t), Ok(None));
        assert_eq!(
            request_tenant(&h(&[("authorization", "Bearer ops"), ("x-scope-orgid", "zz")]), t),
            Ok(Some("zz".into()))
        );
        assert_eq!(AuthError::UnknownToken.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn csv_and_bad_files() {
        let t = TenantTokens::parse_csv("# comment\ntoken,tenant\nabc, t1\n\ndef,t2\n").unwrap();
        assert_eq!(t.lookup("abc"), Some(&TokenScope::Tenant("t1".into())));
        assert_eq!(t.lookup("def"), Some(&TokenScope::Tenant("t2".into())));
        assert_eq!(t.lookup("ab"), None);
        assert!(TenantTokens::parse_csv("abc\n").unwrap_err().contains("line 1"));
        assert!(TenantTokens::parse_csv("a,t\na,u\n").unwrap_err().contains("twice"));
        assert!(TenantTokens::parse_csv("a,\n").is_err());
        assert!(TenantTokens::parse_csv("# nothing\n").is_err());
        assert!(TenantTokens::parse_toml("[tokens]\n").is_err());
        assert!(TenantTokens::parse_toml("tokens = 3").is_err());
        assert!(TenantTokens::parse_toml("[tokens]\n\"a b\" = \"t\"\n").is_err());
    }
}
