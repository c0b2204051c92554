//! `server:`: the HTTP server (OpenAI-compatible API, chat page, health, metrics), its keys
//! and limits, and the host names requests may use.

use serde::Deserialize;

use super::{Config, ConfigError};

/// The `server:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
    /// Keys that may use the API. With none, the server listens on loopback only.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Largest request body, in bytes. It also bounds the text of one embeddings or
    /// tokenize request.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Connections open at once, from everyone; one more is answered `503` with
    /// `Retry-After` and closed, never queued. Each is a file descriptor: keep it well
    /// under the process's open-files limit (`LimitNOFILE` in `config/lore.service`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one client address (0: no such cap). Behind a
    /// reverse proxy every client has the proxy's address: raise it to about
    /// `max_connections`, or set 0, there.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Seconds a client has to send a request's headers, counted from when it connects
    /// or from its previous response on a kept-alive connection: idle and slow-header
    /// connections are closed after this.
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// Seconds a request in progress may stall on its client (no byte of its body
    /// arriving, or its response not being read) before the connection is closed. An
    /// answer waiting in line or being generated is not a stall: the client waits for us.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Names (`lore.example.com`, or with a port, `lore.example.com:8443`) besides the
    /// listen address and `localhost` that requests may address this server by, in their
    /// `Host` header and, from browsers, `Origin`. Without api_keys this is always checked
    /// (a web page whose name was pointed at 127.0.0.1, DNS rebinding, is refused); with
    /// keys only when set.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Texts one `/v1/embeddings` request may hold; more are refused with `400`.
    #[serde(default = "default_max_embedding_inputs")]
    pub max_embedding_inputs: usize,
}

/// One API key: its value is read from an environment variable, never from this file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Environment variable that holds the key.
    pub key_env: String,
    /// Bots (models) this key may use; empty: every bot, and the generator itself.
    #[serde(default)]
    pub bots: Vec<String>,
}

fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_max_body_bytes() -> usize {
    1 << 20
}

fn default_max_connections() -> usize {
    512
}

fn default_max_connections_per_ip() -> usize {
    64
}

fn default_header_read_timeout_secs() -> u64 {
    10
}

fn default_idle_timeout_secs() -> u64 {
    60
}

fn default_max_embedding_inputs() -> usize {
    256
}

impl Config {
    /// `server`: open beyond loopback only with keys, keys for bots there are, limits it
    /// can work with, host names it can compare.
    pub(super) fn check_server(&self) -> Result<(), ConfigError> {
        let Some(server) = &self.server else { return Ok(()) };
        if server.api_keys.is_empty() && !server.listen.ip().is_loopback() {
            return Err(self.error(
                "server.listen",
                "without api_keys the server only listens on loopback (127.0.0.1 or ::1); add a key to listen elsewhere",
            ));
        }
        for (i, key) in server.api_keys.iter().enumerate() {
            if let Some(bot) = key.bots.iter().find(|b| !self.bots.contains_key(*b)) {
                return Err(self.error(&format!("server.api_keys.{i}.bots"), format!("no bot named {bot:?}")));
            }
        }
        if server.max_body_bytes < 1024 {
            return Err(self.error("server.max_body_bytes", "must be at least 1024"));
        }
        let at_least_one = [
            ("max_connections", server.max_connections as u64),
            ("header_read_timeout_secs", server.header_read_timeout_secs),
            ("idle_timeout_secs", server.idle_timeout_secs),
            ("max_embedding_inputs", server.max_embedding_inputs as u64),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err(self.error(&format!("server.{key}"), "must be at least 1"));
        }
        for (i, host) in server.allowed_hosts.iter().enumerate() {
            if let Err(why) = check_allowed_host(host) {
                return Err(self.error(&format!("server.allowed_hosts.{i}"), why));
            }
        }
        Ok(())
    }
}

/// Why `entry` cannot be a `server.allowed_hosts` entry, if it cannot.
pub fn check_allowed_host(entry: &str) -> Result<(), String> {
    let valid = entry.parse::<hyper::http::uri::Authority>().is_ok_and(|authority| {
        let port = &authority.as_str()[authority.host().len()..];
        !authority.as_str().contains('@')
            && !authority.host().is_empty()
            && (port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok()))
    });
    if valid {
        return Ok(());
    }
    Err(format!(
        "{entry:?} is not a host name with an optional port, such as lore.example.com or lore.example.com:8443"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse, OK};
    use super::check_allowed_host;

    #[test]
    fn the_server_listens_beyond_loopback_only_with_keys_and_keys_name_real_bots() {
        let cfg = parse(&(OK.to_string() + "server: {}\n")).unwrap();
        assert_eq!(cfg.server.unwrap().listen.to_string(), "127.0.0.1:8080");
        let open = OK.to_string() + "server:\n  listen: 0.0.0.0:8080\n";
        let e = parse(&open).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("server.listen", Some(13)), "{e}");
        let keyed = open.clone() + "  api_keys: [{key_env: K}]\n";
        assert!(parse(&keyed).is_ok());
        let wrong_bot = open + "  api_keys: [{key_env: K, bots: [nobody]}]\n";
        let e = parse(&wrong_bot).unwrap_err();
        assert_eq!(e.key, "server.api_keys.0.bots", "{e}");
        assert!(e.message.contains("nobody"), "{e}");
    }

    #[test]
    fn the_servers_limits_have_defaults_and_bad_ones_name_their_key() {
        let cfg = parse(&(OK.to_string() + "server: {}\n")).unwrap();
        let server = cfg.server.unwrap();
        assert_eq!((server.max_connections, server.max_connections_per_ip), (512, 64));
        assert_eq!((server.header_read_timeout_secs, server.idle_timeout_secs), (10, 60));
        assert_eq!((server.max_embedding_inputs, server.allowed_hosts.len()), (256, 0));
        for (text, key) in [
            ("server:\n  max_connections: 0\n", "server.max_connections"),
            ("server:\n  header_read_timeout_secs: 0\n", "server.header_read_timeout_secs"),
            ("server:\n  allowed_hosts: [lore.example.com, \"http://x/\"]\n", "server.allowed_hosts.1"),
        ] {
            let e = parse(&(OK.to_string() + text)).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
        let off = OK.to_string() + "server:\n  max_connections_per_ip: 0\n  allowed_hosts: [lore.example.com:8443]\n";
        assert!(parse(&off).is_ok(), "0 turns the per-address cap off");
    }

    #[test]
    fn an_allowed_host_entry_is_a_host_and_an_optional_port() {
        for ok in ["lore.example.com", "lore.example.com:8443", "10.0.0.5", "[::1]:8080"] {
            assert!(check_allowed_host(ok).is_ok(), "{ok}");
        }
        for bad in ["http://lore.example.com/", "user@lore.example.com", "", "lore.example.com:port"] {
            assert!(check_allowed_host(bad).is_err(), "{bad}");
        }
    }
}
