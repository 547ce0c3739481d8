//! Where plansync may send credentials: the one check of every base URL (the config file's,
//! a library user's, and the `instance_url` a CRM token response names).
//!
//! Clear-text `http://` is for a loopback address (a local simulator) unless the config opts
//! in, for example behind a TLS-terminating proxy on the same network; credentials never
//! travel inside a URL, where proxies and logs keep them; and a token is sent to the instance
//! a token response names only when that is `https` on a Salesforce domain or the host the
//! config names (My Domain), so a tampered or misrouted response cannot collect it.

use std::net::IpAddr;

use reqwest::Url;
use thiserror::Error;

/// Domains Salesforce serves orgs from (production, sandboxes, Government Cloud, Hyperforce
/// in China); an `instance_url` outside them and the configured login host is refused.
const SALESFORCE_DOMAINS: &[&str] = &[
    "salesforce.com",
    "force.com",
    "cloudforce.com",
    "database.com",
    "salesforce.mil",
    "crmforce.mil",
    "sfcrmproducts.cn",
];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EndpointError {
    #[error("is not a URL: {0}")]
    NotUrl(String),
    #[error("must be an https URL")]
    Scheme,
    #[error("must not carry a query or fragment")]
    QueryOrFragment,
    /// The URL itself is not repeated: it holds the credentials.
    #[error(
        "must not carry a user name or password (they would travel in clear in logs and proxies); give credentials in the auth section"
    )]
    Credentials,
    #[error(
        "uses http:// to {host}, which is not a loopback address: credentials would cross the network in clear text (use https, or set allow_insecure_http = true in this section if a TLS-terminating proxy sits in between)"
    )]
    InsecureHttp { host: String },
    #[error(
        "is not on a Salesforce domain nor on the configured login host {login_host}: the token is not sent there"
    )]
    UnexpectedInstance { login_host: String },
}

/// A base URL plansync will call: `http`/`https`, no query, fragment or credentials, `http`
/// only to loopback unless `allow_insecure_http`; returned without trailing slashes.
pub fn base_url(raw: &str, allow_insecure_http: bool) -> Result<String, EndpointError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let url = parse(trimmed)?;
    if url.scheme() == "http" && !allow_insecure_http && !is_loopback(&url) {
        return Err(EndpointError::InsecureHttp {
            host: url.host_str().unwrap_or_default().to_string(),
        });
    }
    Ok(trimmed.to_string())
}

/// A webhook's URL: as [`base_url`], but a query is allowed (some services put their key
/// there); never repeated in an error, as it is itself a secret.
pub fn webhook_url(raw: &str, allow_insecure_http: bool) -> Result<(), EndpointError> {
    let url = Url::parse(raw.trim()).map_err(|e| EndpointError::NotUrl(e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::Credentials);
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EndpointError::Scheme);
    }
    if url.scheme() == "http" && !allow_insecure_http && !is_loopback(&url) {
        return Err(EndpointError::InsecureHttp {
            host: url.host_str().unwrap_or_default().to_string(),
        });
    }
    Ok(())
}

/// Whether `url` (already accepted by [`base_url`]) sends credentials in clear text over the
/// network: said at every start when the config opted in.
pub fn is_insecure(url: &str) -> bool {
    Url::parse(url).is_ok_and(|u| u.scheme() == "http" && !is_loopback(&u))
}

/// The `instance_url` of a CRM token response, checked before the token is sent to it:
/// `https` on a Salesforce domain or the login URL's own host. A loopback login (a local
/// simulator) accepts a loopback instance; `allow_insecure_http` accepts `http`.
pub fn instance_url(
    instance: &str,
    login_url: &str,
    allow_insecure_http: bool,
) -> Result<String, EndpointError> {
    let login = parse(login_url.trim())?;
    let url = parse(instance.trim().trim_end_matches('/'))?;
    let login_host = login.host_str().unwrap_or_default().to_ascii_lowercase();
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let known = host == login_host
        || SALESFORCE_DOMAINS
            .iter()
            .any(|d| host.strip_suffix(d).is_some_and(|rest| rest.ends_with('.')))
        || (is_loopback(&url) && is_loopback(&login));
    if !known {
        return Err(EndpointError::UnexpectedInstance { login_host });
    }
    if url.scheme() == "http" && !allow_insecure_http && !is_loopback(&url) {
        return Err(EndpointError::InsecureHttp { host });
    }
    Ok(instance.trim().trim_end_matches('/').to_string())
}

fn parse(text: &str) -> Result<Url, EndpointError> {
    let url = Url::parse(text).map_err(|e| EndpointError::NotUrl(e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::Credentials);
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EndpointError::Scheme);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(EndpointError::QueryOrFragment);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(EndpointError::NotUrl("no host".to_string()));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let d = host.to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_to_loopback_unless_allowed_and_never_with_credentials() {
        assert_eq!(
            base_url("https://login.salesforce.com/", false).as_deref(),
            Ok("https://login.salesforce.com")
        );
        for local in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
            "http://127.8.9.1",
        ] {
            assert!(base_url(local, false).is_ok(), "{local}");
            assert!(!is_insecure(local), "{local}");
        }
        let far = "http://anaplan.example.com/2/0";
        assert!(matches!(
            base_url(far, false),
            Err(EndpointError::InsecureHttp { host }) if host == "anaplan.example.com"
        ));
        assert!(base_url(far, true).is_ok() && is_insecure(far));
        // A host merely named like loopback is not loopback.
        assert!(base_url("http://127.0.0.1.example.com", false).is_err());
        assert!(base_url("http://localhost.example.com", false).is_err());
        for creds in [
            "https://u:p@login.salesforce.com",
            "https://u@x.com",
            "http://:p@127.0.0.1",
        ] {
            let e = base_url(creds, true).unwrap_err();
            assert_eq!(e, EndpointError::Credentials);
            assert!(!e.to_string().contains(":p@"));
        }
        assert_eq!(base_url("ftp://x.com", false), Err(EndpointError::Scheme));
        assert_eq!(
            base_url("https://x.com/?a=1", false),
            Err(EndpointError::QueryOrFragment)
        );
    }

    #[test]
    fn a_token_goes_only_to_a_salesforce_or_the_login_host() {
        let login = "https://login.salesforce.com";
        for ok in [
            "https://acme.my.salesforce.com",
            "https://acme--uat.sandbox.my.salesforce.com/",
            "https://na1.force.com",
        ] {
            assert!(instance_url(ok, login, false).is_ok(), "{ok}");
        }
        let my_domain = "https://sso.acme.example";
        assert!(instance_url("https://sso.acme.example", my_domain, false).is_ok());
        for bad in [
            "https://evil.example",
            "https://salesforce.com.evil.example",
            "https://evilsalesforce.com",
            "http://127.0.0.1:9",
        ] {
            assert!(
                matches!(
                    instance_url(bad, login, false),
                    Err(EndpointError::UnexpectedInstance { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            instance_url("http://acme.my.salesforce.com", login, false),
            Err(EndpointError::InsecureHttp { .. })
        ));
        // A local simulator: loopback login, loopback instance.
        assert!(instance_url("http://127.0.0.1:7", "http://127.0.0.1:7", false).is_ok());
        assert!(instance_url("http://localhost:7", "http://127.0.0.1:7", false).is_ok());
    }
}
