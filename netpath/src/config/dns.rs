//! The `[node.dns]` section: the resolver configuration netpath gives the
//! pods whose namespace it owns, as `/etc/netns/<netns>/resolv.conf` (which
//! `ip netns exec` bind-mounts over `/etc/resolv.conf`; see
//! `crate::reconcile::dns`), and its checks.
//!
//! ```toml
//! [node.dns]
//! nameservers = ["192.168.50.1"]                    # at most 3 (glibc's MAXNS)
//! search = ["cluster.local", "svc.cluster.local"]   # at most 6 domains, 256 characters
//! options = ["ndots:5", "timeout:2"]                # resolv.conf(5) options
//! ```

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{error::ConfigError, validate::special_address};

/// The most nameservers the resolver uses (glibc's `MAXNS`; the rest would
/// be ignored).
pub const MAX_NAMESERVERS: usize = 3;
/// The most search domains (glibc's historical `MAXDNSRCH`).
pub const MAX_SEARCH_DOMAINS: usize = 6;
/// The longest search list, in characters with the spaces between domains
/// (glibc's historical 256-byte buffer).
pub const MAX_SEARCH_LEN: usize = 256;
/// The longest domain name, in characters (without a trailing dot).
const MAX_DOMAIN_LEN: usize = 253;
/// The longest label of a domain name.
const MAX_LABEL_LEN: usize = 63;

/// The `[node.dns]` section: what each pod's `resolv.conf` says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The DNS servers, in the order the resolver asks them (one
    /// `nameserver` line each); at least one, at most [`MAX_NAMESERVERS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<Ipv4Addr>,
    /// The search list (the `search` line): domains tried for names with
    /// fewer dots than `ndots`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options (the `options` line), e.g. `ndots:5`, `timeout:2`,
    /// `attempts:3`, `rotate`, `edns0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl DnsConfig {
    /// Every check of the section, in order: the nameservers (count, then
    /// each address), the search domains (count, each name, the total
    /// length), then each option.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.nameservers.is_empty() {
            return Err(ConfigError::DnsNoNameserver);
        }
        if self.nameservers.len() > MAX_NAMESERVERS {
            return Err(ConfigError::DnsTooManyNameservers {
                count: self.nameservers.len(),
            });
        }
        for &address in &self.nameservers {
            if let Some(why) = special_address(address) {
                return Err(ConfigError::DnsNameserver { address, why });
            }
        }
        if self.search.len() > MAX_SEARCH_DOMAINS {
            return Err(ConfigError::DnsTooManySearchDomains {
                count: self.search.len(),
            });
        }
        for domain in &self.search {
            if let Some(why) = domain_problem(domain) {
                return Err(ConfigError::DnsSearchDomain {
                    domain: domain.clone(),
                    why,
                });
            }
        }
        let len = self.search.iter().map(String::len).sum::<usize>() + self.search.len();
        let len = len.saturating_sub(1);
        if len > MAX_SEARCH_LEN {
            return Err(ConfigError::DnsSearchTooLong { len });
        }
        for option in &self.options {
            let why = if option.is_empty() {
                Some("is empty".to_owned())
            } else {
                option
                    .chars()
                    .find(|c| c.is_whitespace() || c.is_control())
                    .map(|c| format!("contains {c:?}"))
            };
            if let Some(why) = why {
                return Err(ConfigError::DnsOption {
                    option: option.clone(),
                    why,
                });
            }
        }
        Ok(())
    }
}

/// What is wrong with `domain` as a search domain, if anything: a DNS name
/// of letters, digits and `-` (RFC 1123 host names), labels of 1 to 63
/// characters that neither start nor end with `-`, at most 253 characters,
/// written without a trailing dot.
fn domain_problem(domain: &str) -> Option<String> {
    if domain.is_empty() {
        return Some("is empty".into());
    }
    if domain.len() > MAX_DOMAIN_LEN {
        return Some(format!(
            "is {} characters; a domain name has at most {MAX_DOMAIN_LEN}",
            domain.len()
        ));
    }
    if domain.ends_with('.') {
        return Some("ends with '.'; write it without the trailing dot".into());
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Some("has an empty label (two dots in a row, or a leading dot)".into());
        }
        if label.len() > MAX_LABEL_LEN {
            return Some(format!(
                "has the label {label:?} of {} characters; a label has at most {MAX_LABEL_LEN}",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Some(format!("contains {c:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!(
                "has the label {label:?}, which starts or ends with '-'"
            ));
        }
    }
    None
}
