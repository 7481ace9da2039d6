//! Where a webhook may go: `https://` (plain `http://` only to loopback, in development),
//! and never to an address in a private, loopback, link-local or otherwise non-public range
//! unless the operator allowed it — checked on the URL when it is registered and on every
//! address its host resolves to before each attempt (so a name that resolves to the
//! operator's own network later is refused too).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

use crate::config::WebhooksConfig;

pub const URL_MAX: usize = 2000;

/// What the operator allows beyond public HTTPS receivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allow {
    /// `http://` to a loopback address, and loopback addresses (development).
    pub http_loopback: bool,
    /// Private, loopback and link-local addresses (an on-premises receiver, tests).
    pub private: bool,
}

impl From<&WebhooksConfig> for Allow {
    fn from(c: &WebhooksConfig) -> Self {
        Allow { http_loopback: c.allow_http_loopback, private: c.allow_private }
    }
}

/// Checks a URL as registered; returns it parsed, or why it is refused.
pub fn check_url(raw: &str, allow: Allow) -> Result<Url, String> {
    if raw.len() > URL_MAX {
        return Err(format!("url is longer than {URL_MAX} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("url is not a valid URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry a user name or password (sign with the endpoint's secret instead)".into());
    }
    if url.fragment().is_some() {
        return Err("url must not have a #fragment".into());
    }
    let host = url.host_str().ok_or("url has no host")?.to_string();
    let literal = literal_ip(&url);
    match url.scheme() {
        "https" => {}
        "http" if allow.http_loopback && (literal.is_some_and(|ip| ip.is_loopback()) || host == "localhost") => {}
        "http" => {
            return Err(
                "url must be https:// (http:// only to a loopback address with webhooks.allow_http_loopback)".into()
            )
        }
        other => return Err(format!("url must be https://, not {other}://")),
    }
    if let Some(ip) = literal {
        check_address(ip, allow)?;
    }
    Ok(url)
}

/// The URL's host when it is an IP address.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(a) => Some(IpAddr::V4(a)),
        url::Host::Ipv6(a) => Some(IpAddr::V6(a)),
        url::Host::Domain(_) => None,
    }
}

/// Refuses an address a receiver must not have.
pub fn check_address(ip: IpAddr, allow: Allow) -> Result<(), String> {
    let ip = canonical(ip);
    if ip.is_loopback() && (allow.http_loopback || allow.private) {
        return Ok(());
    }
    if is_public(ip) || (allow.private && !ip.is_unspecified() && !ip.is_multicast()) {
        return Ok(());
    }
    Err(format!(
        "{ip} is not a public address (private, loopback, link-local and reserved ranges are refused; \
         see webhooks.allow_private)"
    ))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => is_public_v6(a),
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, o2, _] = a.octets();
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || o0 == 0
        // 100.64.0.0/10, carrier-grade NAT
        || (o0 == 100 && (o1 & 0xc0) == 64)
        // 192.0.0.0/24, IETF protocol assignments
        || (o0 == 192 && o1 == 0 && o2 == 0)
        // 198.18.0.0/15, benchmarking
        || (o0 == 198 && (o1 & 0xfe) == 18)
        // 240.0.0.0/4, reserved
        || o0 >= 240)
}

fn is_public_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        // fc00::/7, unique local
        || (s[0] & 0xfe00) == 0xfc00
        // fe80::/10, link-local
        || (s[0] & 0xffc0) == 0xfe80
        // 2001:db8::/32, documentation
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        // 64:ff9b::/96 and 64:ff9b:1::/48, NAT64 (could reach an IPv4 private address)
        || (s[0] == 0x0064 && s[1] == 0xff9b)
        // ::/96, IPv4-compatible (deprecated)
        || (s[0..6].iter().all(|x| *x == 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Allow = Allow { http_loopback: false, private: false };

    #[test]
    fn only_public_https_receivers_by_default() {
        assert!(check_url("https://hooks.example.com/hearth", NONE).is_ok());
        assert!(check_url("https://93.184.216.34:8443/x", NONE).is_ok());
        for bad in [
            "http://hooks.example.com/",
            "ftp://hooks.example.com/",
            "https://user:pw@hooks.example.com/",
            "https://10.1.2.3/",
            "https://169.254.169.254/latest/meta-data",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[fd00::1]/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "not a url",
        ] {
            assert!(check_url(bad, NONE).is_err(), "{bad}");
        }
    }

    #[test]
    fn development_and_on_premises_settings_open_only_what_they_name() {
        let dev = Allow { http_loopback: true, private: false };
        assert!(check_url("http://127.0.0.1:8080/hook", dev).is_ok());
        assert!(check_url("http://localhost:8080/hook", dev).is_ok());
        assert!(check_url("http://10.0.0.5/hook", dev).is_err());
        assert!(check_url("https://10.0.0.5/hook", dev).is_err());
        let onprem = Allow { http_loopback: false, private: true };
        assert!(check_url("https://10.0.0.5/hook", onprem).is_ok());
        assert!(check_url("http://10.0.0.5/hook", onprem).is_err());
        assert!(check_address("0.0.0.0".parse().unwrap(), onprem).is_err());
        assert!(check_address("224.0.0.1".parse().unwrap(), onprem).is_err());
    }
}
