//! The SSRF policy of outbound `http::*`: which destinations a script may reach, and the
//! HTTP client that enforces it.
//!
//! What must stay true:
//! - Only public unicast addresses are reached, plus what the operator allow-lists (exact
//!   host names in `allow_hosts`, address ranges in `allow_cidrs`). IPv4-mapped and
//!   IPv4-compatible IPv6, NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) are unwrapped and
//!   judged as the IPv4 address they carry.
//! - Every address a name resolves to is checked inside the client's resolver, so the
//!   address that is checked is the address that is connected to (no DNS-rebinding gap);
//!   one refused address refuses the name.
//! - The resolver is not consulted for literal IPs: `check_url` judges them (after the
//!   url crate's WHATWG normalisation of decimal, octal and hex forms) before the request
//!   and at every redirect hop, together with the scheme (http and https only).
//! - No proxy is ever used (a proxy would resolve names itself).
//! - A refusal carries no address: `Refused`'s text is all that anybody is told.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use ipnet::IpNet;
use url::{Host, Url};

/// Looks host names up. The default asks the system (tokio's `lookup_host`); tests give
/// their own to map test names to loopback.
#[async_trait]
pub trait Resolve: Send + Sync {
    /// Every address `host` resolves to.
    ///
    /// # Errors
    /// When the name does not resolve.
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The system resolver, through tokio's `lookup_host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        let addrs = tokio::net::lookup_host((host, 0)).await?;
        Ok(addrs.map(|a| a.ip()).collect())
    }
}

/// What outbound HTTP may reach and consume. One per executor.
#[derive(Clone)]
pub struct OutboundConfig {
    /// Host names allowed whatever they resolve to (exact, case-insensitive).
    pub allow_hosts: Vec<String>,
    /// Address ranges allowed although not public (`127.0.0.1/32` in tests).
    pub allow_cidrs: Vec<IpNet>,
    /// The longest a request may take, connect to last body byte; scripts can only lower it.
    pub timeout: Duration,
    /// The largest response body read; scripts can only lower it.
    pub max_response_bytes: usize,
    /// Redirects followed per request, each hop checked again.
    pub max_redirects: usize,
    /// `None`: the system resolver.
    pub resolver: Option<Arc<dyn Resolve>>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            allow_hosts: Vec::new(),
            allow_cidrs: Vec::new(),
            timeout: Duration::from_secs(10),
            max_response_bytes: 5 * 1024 * 1024,
            max_redirects: 5,
            resolver: None,
        }
    }
}

impl fmt::Debug for OutboundConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundConfig")
            .field("allow_hosts", &self.allow_hosts)
            .field("allow_cidrs", &self.allow_cidrs)
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_redirects", &self.max_redirects)
            .field(
                "resolver",
                &if self.resolver.is_some() {
                    "custom"
                } else {
                    "system"
                },
            )
            .finish()
    }
}

/// A configured range that is neither `addr/len` nor a bare address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an address range (write 10.1.0.0/16 or fd00::/8)")]
pub struct InvalidCidr(pub String);

/// Parse configured ranges; a bare address is a range of one (`/32`, `/128`).
///
/// # Errors
/// The first entry that is not a range.
pub fn parse_cidrs<S: AsRef<str>>(list: &[S]) -> Result<Vec<IpNet>, InvalidCidr> {
    list.iter()
        .map(|s| {
            let s = s.as_ref().trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| InvalidCidr(s.to_owned()))
        })
        .collect()
}

/// Why a destination was refused. The text is what the script sees: no address, no port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("http: destination not allowed")]
    Destination,
    #[error("http: only http and https URLs are allowed")]
    Scheme,
    #[error("http: too many redirects")]
    Redirects,
}

/// The allow decision, shared by the URL check, the resolver and the redirect policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow_hosts: Vec<String>,
    allow_cidrs: Vec<IpNet>,
}

impl Policy {
    pub fn new(config: &OutboundConfig) -> Policy {
        Policy {
            allow_hosts: config
                .allow_hosts
                .iter()
                .map(|h| normalise_host(h))
                .collect(),
            allow_cidrs: config.allow_cidrs.clone(),
        }
    }

    /// A public unicast address, or one inside an allowed range; never a cloud metadata
    /// address, whatever the allow-list says.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let unwrapped = unwrap_embedded(ip);
        if is_metadata(ip) || unwrapped.is_some_and(|v4| is_metadata(IpAddr::V4(v4))) {
            return false;
        }
        let allowed_range = self.allow_cidrs.iter().any(|net| {
            net.contains(&ip) || unwrapped.is_some_and(|v4| net.contains(&IpAddr::V4(v4)))
        });
        allowed_range || is_public(ip)
    }

    /// Whether `host` is allow-listed by name (whatever it resolves to).
    pub fn allows_host_name(&self, host: &str) -> bool {
        let host = normalise_host(host);
        self.allow_hosts.contains(&host)
    }

    /// Check a URL before a request and at each redirect hop: the scheme, and a literal
    /// IP host (names are checked by the resolver, on every address they resolve to).
    ///
    /// # Errors
    /// `Scheme` for anything but http and https, `Destination` for a refused literal IP
    /// or a URL without a host.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme);
        }
        let ip = match url.host() {
            None => return Err(Refused::Destination),
            Some(Host::Domain(name)) => {
                // The url crate turns every IPv4 spelling into `Host::Ipv4`; a domain that
                // still reads as an address would reach the connector unresolved.
                match name.parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => return Ok(()),
                }
            }
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
        };
        if self.allows_ip(ip) || self.allows_host_name(&ip.to_string()) {
            Ok(())
        } else {
            Err(Refused::Destination)
        }
    }
}

fn normalise_host(host: &str) -> String {
    host.trim()
        .trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// The cloud metadata services (AWS, GCP, Azure, OpenStack; AWS over IPv6; Alibaba).
/// They fall in refused ranges anyway; named so that no future allowance can let them in.
const METADATA: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// Whether `ip` is a public unicast address: refuses loopback, private, link-local,
/// unique-local, CGNAT, multicast, broadcast, unspecified, documentation, benchmarking,
/// reserved and metadata addresses, judging embedded IPv4 (mapped, compatible, NAT64,
/// 6to4) as IPv4.
/// A cloud metadata endpoint: refused even when an allow-list would admit its range.
fn is_metadata(ip: IpAddr) -> bool {
    METADATA.contains(&ip)
}

pub fn is_public(ip: IpAddr) -> bool {
    if METADATA.contains(&ip) {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    if METADATA.contains(&IpAddr::V4(ip)) {
        return false;
    }
    let [a, b, c, _] = ip.octets();
    let refused = a == 0                                   // "this network", 0.0.0.0
        || a == 10                                         // private
        || a == 127                                        // loopback
        || (a == 100 && (64..128).contains(&b))            // CGNAT 100.64/10
        || (a == 169 && b == 254)                          // link-local, metadata
        || (a == 172 && (16..32).contains(&b))             // private
        || (a == 192 && b == 0 && c == 0)                  // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)                  // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)                // 6to4 relay anycast
        || (a == 192 && b == 168)                          // private
        || (a == 198 && (b == 18 || b == 19))              // benchmarking 198.18/15
        || (a == 198 && b == 51 && c == 100)               // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)                // TEST-NET-3
        || a >= 224; // multicast 224/4, reserved 240/4, broadcast
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if ip.is_unspecified() || ip.is_loopback() {
        return false;
    }
    if let Some(v4) = unwrap_embedded(IpAddr::V6(ip)) {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // Only global unicast (2000::/3) is public; that excludes unique-local fc00::/7,
    // link-local fe80::/10, multicast ff00::/8, discard 100::/64, local NAT64 64:ff9b:1::/48.
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    // 2001::/23 holds IETF assignments (Teredo, benchmarking, ORCHID); 2001:db8::/32
    // and 3fff::/20 are documentation.
    let ietf_or_documentation = s[0] == 0x2001 && (s[1] < 0x0200 || s[1] == 0x0db8);
    let documentation = s[0] & 0xfff0 == 0x3ff0;
    !(ietf_or_documentation || documentation)
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped `::ffff:a.b.c.d`,
/// IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`.
fn unwrap_embedded(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let o = v6.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..5] == [0; 5]
        && (s[5] == 0xffff || s[5] == 0)
        && !v6.is_loopback()
        && !v6.is_unspecified()
    {
        return Some(low);
    }
    if s[..6] == [0x0064, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// The resolver reqwest uses: looks the name up, then refuses the name if any of its
/// addresses is refused (unless the name itself is allow-listed).
pub(crate) struct PolicyResolver {
    policy: Arc<Policy>,
    inner: Arc<dyn Resolve>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = inner.lookup(&host).await.map_err(|_| ResolveFailed)?;
            if addrs.is_empty() {
                return Err(ResolveFailed.into());
            }
            let metadata = addrs.iter().any(|ip| {
                is_metadata(*ip)
                    || unwrap_embedded(*ip).is_some_and(|v4| is_metadata(IpAddr::V4(v4)))
            });
            if metadata
                || (!policy.allows_host_name(&host)
                    && !addrs.iter().all(|ip| policy.allows_ip(*ip)))
            {
                return Err(Refused::Destination.into());
            }
            let addrs: reqwest::dns::Addrs =
                Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// A name that did not resolve; carries nothing of the lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("http: host not found")]
pub struct ResolveFailed;

/// The client could not be built (TLS setup).
#[derive(Debug, thiserror::Error)]
#[error("outbound HTTP client could not be built")]
pub struct ClientBuildError(#[source] reqwest::Error);

/// The one client of an executor: no proxy, the policy resolver, every redirect hop
/// checked, connect and total timeouts, rustls for https.
///
/// # Errors
/// When the TLS backend cannot be set up.
pub fn build_client(config: &OutboundConfig) -> Result<reqwest::Client, ClientBuildError> {
    let policy = Arc::new(Policy::new(config));
    let inner: Arc<dyn Resolve> = config
        .resolver
        .clone()
        .unwrap_or_else(|| Arc::new(SystemResolver));
    let resolver = Arc::new(PolicyResolver {
        policy: Arc::clone(&policy),
        inner,
    });
    let max_redirects = config.max_redirects;
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max_redirects {
            return attempt.error(Refused::Redirects);
        }
        match policy.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            // Not followed, not an error: the script gets the 3xx and its `location`
            // (reqwest does the same by itself for a location it cannot parse as a URI).
            Err(Refused::Scheme) => attempt.stop(),
            Err(refused) => attempt.error(refused),
        }
    });
    reqwest::Client::builder()
        .no_proxy()
        .dns_resolver(resolver)
        .redirect(redirects)
        .connect_timeout(config.timeout)
        .timeout(config.timeout)
        .user_agent(concat!("picloud/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(ClientBuildError)
}

/// One outbound request, as the script API builds it.
#[derive(Debug, Clone, Default)]
pub struct OutboundRequest {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// The body and the content type to send with it unless `headers` names one.
    pub body: Option<(bytes::Bytes, &'static str)>,
    /// Lowers the configured timeout, never raises it.
    pub timeout: Option<Duration>,
    /// Lowers the configured body cap, never raises it.
    pub max_bytes: Option<usize>,
}

/// A response read to its end (within the cap).
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    pub status: u16,
    /// Lowercase names, in the order received; repeated names stay repeated.
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
}

/// What a script is told when a request fails: our words, never an address, a port or
/// the text of a lower-level error (kept as `#[source]` for the log).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("http: invalid URL")]
    InvalidUrl,
    #[error("http: invalid header '{0}'")]
    InvalidHeader(String),
    #[error("http: request timed out")]
    Timeout,
    #[error("http: response larger than {0} bytes")]
    TooLarge(usize),
    #[error("http: host not found")]
    HostNotFound,
    #[error("http: could not connect")]
    Connect(#[source] reqwest::Error),
    #[error("http: request failed")]
    Failed(#[source] reqwest::Error),
    #[error("http: outbound HTTP is not available")]
    Unavailable,
}

impl HttpError {
    /// The `outcome` label of `picloud_http_client_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            HttpError::Refused(_) => "refused",
            HttpError::Timeout => "timeout",
            HttpError::TooLarge(_) => "too_large",
            HttpError::InvalidUrl | HttpError::InvalidHeader(_) => "invalid",
            HttpError::HostNotFound
            | HttpError::Connect(_)
            | HttpError::Failed(_)
            | HttpError::Unavailable => "error",
        }
    }

    fn from_reqwest(error: reqwest::Error) -> HttpError {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(e) = cause {
            if let Some(refused) = e.downcast_ref::<Refused>() {
                return HttpError::Refused(*refused);
            }
            if e.is::<ResolveFailed>() {
                return HttpError::HostNotFound;
            }
            cause = e.source();
        }
        if error.is_timeout() {
            HttpError::Timeout
        } else if error.is_connect() {
            HttpError::Connect(error)
        } else {
            HttpError::Failed(error)
        }
    }
}

/// The outbound HTTP client of one executor, with its policy and caps.
pub struct OutboundClient {
    client: reqwest::Client,
    policy: Policy,
    timeout: Duration,
    max_response_bytes: usize,
}

impl OutboundClient {
    /// # Errors
    /// When the TLS backend cannot be set up.
    pub fn new(config: &OutboundConfig) -> Result<OutboundClient, ClientBuildError> {
        Ok(OutboundClient {
            client: build_client(config)?,
            policy: Policy::new(config),
            timeout: config.timeout,
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// Send one request under the policy and read the whole response body, stopping at
    /// the cap. Counts the outcome in `picloud_http_client_requests_total`.
    ///
    /// # Errors
    /// See `HttpError`: refused destinations and schemes (before any connection),
    /// timeouts, a body over the cap, transport failures.
    pub async fn send(&self, request: OutboundRequest) -> Result<OutboundResponse, HttpError> {
        let result = self.send_uncounted(request).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        metrics::counter!("picloud_http_client_requests_total", "outcome" => outcome).increment(1);
        result
    }

    async fn send_uncounted(
        &self,
        request: OutboundRequest,
    ) -> Result<OutboundResponse, HttpError> {
        let url = Url::parse(request.url.trim()).map_err(|_| HttpError::InvalidUrl)?;
        self.policy.check_url(&url)?;
        let timeout = request
            .timeout
            .map_or(self.timeout, |t| t.min(self.timeout));
        let cap = request
            .max_bytes
            .map_or(self.max_response_bytes, |m| m.min(self.max_response_bytes));
        let mut headers = http::HeaderMap::new();
        for (name, value) in &request.headers {
            let header = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::InvalidHeader(name.clone()))?;
            let value = http::HeaderValue::from_str(value)
                .map_err(|_| HttpError::InvalidHeader(name.clone()))?;
            headers.append(header, value);
        }
        let mut builder = self.client.request(request.method, url).timeout(timeout);
        if let Some((body, content_type)) = request.body {
            if !headers.contains_key(http::header::CONTENT_TYPE) {
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(content_type),
                );
            }
            builder = builder.body(body);
        }
        let exchange = async {
            let mut response = builder
                .headers(headers)
                .send()
                .await
                .map_err(HttpError::from_reqwest)?;
            if response.content_length().is_some_and(|n| n > cap as u64) {
                return Err(HttpError::TooLarge(cap));
            }
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(HttpError::from_reqwest)? {
                if body.len() + chunk.len() > cap {
                    return Err(HttpError::TooLarge(cap));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(OutboundResponse {
                status,
                headers,
                body: body.into(),
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout)?
    }
}

#[cfg(test)]
mod metadata_tests {
    use super::*;

    #[test]
    fn an_allow_list_never_admits_the_cloud_metadata_addresses() {
        let config = OutboundConfig {
            allow_cidrs: parse_cidrs(&["169.254.0.0/16", "100.64.0.0/10"]).unwrap(),
            ..OutboundConfig::default()
        };
        let policy = Policy::new(&config);
        assert!(policy.allows_ip("169.254.1.1".parse().unwrap()));
        assert!(!policy.allows_ip("169.254.169.254".parse().unwrap()));
        assert!(!policy.allows_ip("100.100.100.200".parse().unwrap()));
        assert!(!policy.allows_ip("::ffff:169.254.169.254".parse().unwrap()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn public_unicast_addresses_are_allowed() {
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "2606:4700::1111",
            "2a00:1450::1",
        ] {
            assert!(is_public(ip(s)), "{s} should be public");
        }
    }

    #[test]
    fn every_special_purpose_ipv4_range_is_refused() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "127.0.0.1",
            "127.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "100.100.100.200",
            "169.254.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_public(ip(s)), "{s} should be refused");
        }
        // Neighbours of the refused ranges stay public.
        for s in [
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "198.20.0.0",
        ] {
            assert!(is_public(ip(s)), "{s} should be public");
        }
    }

    #[test]
    fn every_special_purpose_ipv6_range_is_refused() {
        for s in [
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "fd00:ec2::254",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "2001::1",
            "2001:2::1",
            "3fff::1",
            "100::1",
            "64:ff9b:1::1",
        ] {
            assert!(!is_public(ip(s)), "{s} should be refused");
        }
    }

    #[test]
    fn ipv6_that_carries_ipv4_is_judged_as_that_ipv4() {
        for s in [
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
        ] {
            assert!(!is_public(ip(s)), "{s} should be refused");
        }
        for s in ["::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"] {
            assert!(is_public(ip(s)), "{s} should be public");
        }
    }

    #[test]
    fn an_allowed_range_lets_its_addresses_in_including_their_mapped_form() {
        let config = OutboundConfig {
            allow_cidrs: parse_cidrs(&["127.0.0.1/32", "10.1.0.0/16"]).unwrap(),
            ..OutboundConfig::default()
        };
        let policy = Policy::new(&config);
        assert!(policy.allows_ip(ip("127.0.0.1")));
        assert!(policy.allows_ip(ip("::ffff:127.0.0.1")));
        assert!(policy.allows_ip(ip("10.1.200.3")));
        assert!(!policy.allows_ip(ip("127.0.0.2")));
        assert!(!policy.allows_ip(ip("10.2.0.1")));
        assert!(!policy.allows_ip(ip("::1")));
    }

    #[test]
    fn configured_ranges_accept_bare_addresses_and_reject_junk() {
        let nets = parse_cidrs(&["10.0.0.5", "fd00::/8"]).unwrap();
        assert_eq!(nets[0].to_string(), "10.0.0.5/32");
        assert_eq!(nets[1].to_string(), "fd00::/8");
        assert_eq!(
            parse_cidrs(&["10.0.0.0/33"]),
            Err(InvalidCidr("10.0.0.0/33".into()))
        );
    }

    #[test]
    fn literal_ips_in_every_spelling_are_normalised_and_refused() {
        let policy = Policy::default();
        for s in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://10.0.0.1/",
            "https://192.168.0.1:8443/",
            "http://0/",
            "http://user:pw@127.0.0.1:8080/",
        ] {
            assert_eq!(
                policy.check_url(&url(s)),
                Err(Refused::Destination),
                "{s} should be refused"
            );
        }
    }

    #[test]
    fn the_url_crate_normalises_ipv4_spellings_to_one_address() {
        for s in [
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://127.1/",
        ] {
            assert_eq!(url(s).host(), Some(Host::Ipv4(Ipv4Addr::LOCALHOST)), "{s}");
        }
    }

    #[test]
    fn names_are_left_to_the_resolver_and_public_literals_pass() {
        let policy = Policy::default();
        assert_eq!(policy.check_url(&url("https://example.com/x")), Ok(()));
        assert_eq!(policy.check_url(&url("http://localhost:8080/")), Ok(()));
        assert_eq!(policy.check_url(&url("http://8.8.8.8/")), Ok(()));
    }

    #[test]
    fn schemes_other_than_http_and_https_are_refused() {
        let policy = Policy::default();
        for s in [
            "file:///etc/passwd",
            "gopher://example.com/",
            "ftp://example.com/",
            "data:text/plain,hi",
            "ws://example.com/",
        ] {
            assert_eq!(policy.check_url(&url(s)), Err(Refused::Scheme), "{s}");
        }
    }

    #[test]
    fn allow_listed_names_match_exactly_and_case_insensitively() {
        let config = OutboundConfig {
            allow_hosts: vec!["Internal.Example".into()],
            ..OutboundConfig::default()
        };
        let policy = Policy::new(&config);
        assert!(policy.allows_host_name("internal.example"));
        assert!(policy.allows_host_name("INTERNAL.example."));
        assert!(!policy.allows_host_name("x.internal.example"));
        assert!(!policy.allows_host_name("internal.example.evil"));
    }

    #[test]
    fn refusals_never_name_an_address() {
        for r in [Refused::Destination, Refused::Scheme, Refused::Redirects] {
            let text = r.to_string();
            assert!(text.starts_with("http: "), "{text}");
            assert!(!text.chars().any(|c| c.is_ascii_digit()), "{text}");
        }
    }
}
