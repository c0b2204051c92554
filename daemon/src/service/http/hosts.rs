//! Which names a request may address this server by. Without API keys the server is open
//! to whatever runs on this machine, browsers included: a web page on another site whose
//! name it points at 127.0.0.1 (DNS rebinding) sends that name as `Host`, and a page's
//! script sends its own site as `Origin`. Both are checked against the listen address,
//! `localhost` and `server.allowed_hosts`: always without keys, with keys only when
//! `allowed_hosts` is set.

use std::net::SocketAddr;

use axum::http::uri::Authority;
use axum::http::{header, HeaderMap, StatusCode};

use super::ApiError;

/// The names requests may use, checked or not.
#[derive(Debug, Clone)]
pub(super) struct AllowedHosts {
    /// Lower-case host (`[::1]` for an IPv6 address) and, if it is bound to one, the port.
    names: Vec<(String, Option<u16>)>,
    checked: bool,
}

impl AllowedHosts {
    pub(super) fn new(listen: SocketAddr, configured: &[String], has_keys: bool) -> Self {
        let port = Some(listen.port());
        let mut names =
            vec![("localhost".to_string(), port), ("127.0.0.1".to_string(), port), ("[::1]".to_string(), port)];
        if !listen.ip().is_unspecified() {
            let ip = match listen {
                SocketAddr::V4(v4) => v4.ip().to_string(),
                SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            };
            names.push((ip, port));
        }
        for entry in configured {
            // Checked with the config.
            if let Ok(authority) = entry.parse::<Authority>() {
                names.push((authority.host().to_ascii_lowercase(), authority.port_u16()));
            }
        }
        Self { names, checked: !has_keys || !configured.is_empty() }
    }

    /// Whether `authority` (`host` or `host:port`) names this server. Without a port, as
    /// browsers send it for port 80, it matches a name bound to port 80.
    fn allows(&self, authority: &str) -> bool {
        let Ok(authority) = authority.parse::<Authority>() else { return false };
        let host = authority.host().to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(80);
        self.names.iter().any(|(name, bound)| *name == host && bound.is_none_or(|p| p == port))
    }

    /// Refuses a request whose `Host`, or `Origin` when a browser sent one, is not one of
    /// the allowed names.
    pub(super) fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if !self.checked {
            return Ok(());
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        if !self.allows(host) {
            let message = format!(
                "this server does not answer to the name {host:?} (a web page pointing its own name at this machine would send it); if the name is yours, add it to server.allowed_hosts"
            );
            return Err(ApiError::new(StatusCode::FORBIDDEN, "host_not_allowed", message));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default();
            let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or_default();
            if !self.allows(authority) {
                let message = format!(
                    "requests from web pages of {origin:?} are refused; if that site is yours, add its host to server.allowed_hosts"
                );
                return Err(ApiError::new(StatusCode::FORBIDDEN, "origin_not_allowed", message));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn without_keys_only_the_listen_address_localhost_and_configured_names_are_answered() {
        let hosts = AllowedHosts::new("127.0.0.1:8080".parse().unwrap(), &["Lore.Example.com".into()], false);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
            "lore.example.com",
            "lore.example.com:9",
        ] {
            assert!(hosts.check(&headers(ok, None)).is_ok(), "{ok}");
        }
        for refused in
            ["evil.example:8080", "evil.example", "127.0.0.1:8081", "localhost", "", "127.0.0.1.evil.example:8080"]
        {
            let error = hosts.check(&headers(refused, None)).unwrap_err();
            assert_eq!(error.status, StatusCode::FORBIDDEN, "{refused}");
            assert!(error.message.contains("server.allowed_hosts"), "{}", error.message);
        }
        assert!(hosts.check(&headers("localhost:8080", Some("http://localhost:8080"))).is_ok());
        for origin in ["http://evil.example", "null", "http://evil.example:8080"] {
            let error = hosts.check(&headers("localhost:8080", Some(origin))).unwrap_err();
            assert_eq!(error.code, "origin_not_allowed", "{origin}");
        }
    }

    #[test]
    fn with_keys_names_are_checked_only_when_configured() {
        let open = AllowedHosts::new("0.0.0.0:8080".parse().unwrap(), &[], true);
        assert!(open.check(&headers("anything.example", Some("http://elsewhere.example"))).is_ok());
        let named = AllowedHosts::new("0.0.0.0:8080".parse().unwrap(), &["lore.example.com:8443".into()], true);
        assert!(named.check(&headers("lore.example.com:8443", None)).is_ok());
        assert!(named.check(&headers("lore.example.com:8080", None)).is_err(), "bound to its port");
        assert!(named.check(&headers("0.0.0.0:8080", None)).is_err());
    }
}
