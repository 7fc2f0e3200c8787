//! `net.cidr_intersects`, `net.cidr_overlap` and `net.cidr_merge` (OPA's
//! `v1/topdown/cidr.go`), with Go's `net` semantics: an IPv4-mapped IPv6 address is
//! an IPv4 address, a CIDR's host bits are masked away when parsed, and an IPv4
//! network never contains an IPv6 address nor the reverse.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use regorus::Value;

use super::{Args, CallError, CallResult};

/// An address family and an address in it, as Go's `net.IP.To4` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// A network: the masked address and the prefix length within its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Net {
    family: Family,
    addr: u128,
    prefix: u8,
}

fn canonical(ip: IpAddr) -> (Family, u128) {
    match ip {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (Family::V4, u128::from(u32::from(v4))),
            None => (Family::V6, u128::from(v6)),
        },
    }
}

fn mask(family: Family, prefix: u8) -> u128 {
    let bits = family.bits();
    if prefix == 0 {
        return 0;
    }
    let full = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    // 0 ..= 127 host bits once the prefix is at least 1.
    let host = bits - prefix.min(bits);
    full & !((1u128 << host) - 1)
}

impl Net {
    fn new(family: Family, addr: u128, prefix: u8) -> Net {
        Net {
            family,
            addr: addr & mask(family, prefix),
            prefix,
        }
    }

    fn contains(&self, family: Family, addr: u128) -> bool {
        self.family == family && addr & mask(self.family, self.prefix) == self.addr
    }

    fn contains_net(&self, other: &Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.family, other.addr)
    }

    fn to_go_string(self) -> String {
        let ip = match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(self.addr).unwrap_or(0))),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(self.addr)),
        };
        format!("{ip}/{}", self.prefix)
    }
}

/// Go's `net.ParseIP`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok()
}

/// Go's `net.ParseCIDR`: `address/prefix`, the prefix decimal and within the family
/// of the address as written (an IPv4-mapped IPv6 network keeps the IPv4 part of its
/// mask, as Go's `networkNumberAndMask` does).
fn parse_cidr(s: &str) -> Result<Net, String> {
    let invalid = || format!("invalid CIDR address: {s}");
    let (ip, prefix) = s.split_once('/').ok_or_else(invalid)?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
    let ip = parse_ip(ip).ok_or_else(invalid)?;
    let written_bits = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if prefix > written_bits {
        return Err(invalid());
    }
    let (family, addr) = canonical(ip);
    let prefix = if written_bits == 128 && family == Family::V4 {
        prefix.saturating_sub(96)
    } else {
        prefix
    };
    Ok(Net::new(family, addr, prefix))
}

fn cidr_operand(args: &Args<'_>, i: usize) -> Result<Net, CallError> {
    let s = args.string(i)?;
    parse_cidr(s).map_err(|e| args.error(e))
}

pub(super) fn call(args: &Args<'_>) -> CallResult {
    match args.name {
        "net.cidr_intersects" => {
            let (a, b) = (cidr_operand(args, 0)?, cidr_operand(args, 1)?);
            Ok(Value::Bool(
                a.contains(b.family, b.addr) || b.contains(a.family, a.addr),
            ))
        }
        "net.cidr_overlap" => {
            let net = cidr_operand(args, 0)?;
            let ip = args.string(1)?;
            let (family, addr) = parse_ip(ip)
                .map(canonical)
                .ok_or_else(|| args.error(format!("invalid IP address: {ip}")))?;
            Ok(Value::Bool(net.contains(family, addr)))
        }
        "net.cidr_merge" => merge(args),
        _ => Err(args.error("not provided by lockstep")),
    }
}

/// An element of `net.cidr_merge`'s operand: an address (a network of one address)
/// or a CIDR.
fn network_of(args: &Args<'_>, v: &Value) -> Result<Net, CallError> {
    let Value::String(s) = v else {
        return Err(args.error("element must be string"));
    };
    match parse_ip(s) {
        Some(ip) => {
            let (family, addr) = canonical(ip);
            Ok(Net::new(family, addr, family.bits()))
        }
        None => parse_cidr(s).map_err(|e| args.error(e)),
    }
}

fn merge(args: &Args<'_>) -> CallResult {
    let nets: Vec<Net> = match args.get(0)? {
        Value::Array(items) => items
            .iter()
            .map(|v| network_of(args, v))
            .collect::<Result<_, _>>()?,
        Value::Set(items) => items
            .iter()
            .map(|v| network_of(args, v))
            .collect::<Result<_, _>>()?,
        _ => return Err(args.type_error(0, "any<array<any<string>>, set<any<string>>>")),
    };
    let merged: BTreeSet<Value> = aggregate(nets)
        .into_iter()
        .map(|n| Value::from(n.to_go_string()))
        .collect();
    Ok(Value::from(merged))
}

/// The fewest networks covering exactly the union of `nets`.
fn aggregate(mut nets: Vec<Net>) -> Vec<Net> {
    nets.sort_by_key(|n| (n.family, n.addr, n.prefix));
    // Drop networks inside an earlier one (sorted: a container comes first).
    let mut kept: Vec<Net> = Vec::with_capacity(nets.len());
    for n in nets {
        if kept.last().is_some_and(|k| k.contains_net(&n)) {
            continue;
        }
        kept.push(n);
    }
    // Join sibling halves until nothing changes; each pass can only shorten.
    loop {
        let mut out: Vec<Net> = Vec::with_capacity(kept.len());
        let mut changed = false;
        for n in kept {
            if let Some(last) = out.last().copied()
                && let Some(joined) = join(last, n)
            {
                out.pop();
                // The joined network may now contain or pair with its predecessor.
                let mut j = joined;
                while let Some(prev) = out.last().copied() {
                    if prev.contains_net(&j) {
                        j = prev;
                        out.pop();
                    } else if let Some(k) = join(prev, j) {
                        j = k;
                        out.pop();
                    } else {
                        break;
                    }
                }
                out.push(j);
                changed = true;
            } else {
                out.push(n);
            }
        }
        kept = out;
        if !changed {
            return kept;
        }
    }
}

/// The parent of two sibling networks.
fn join(a: Net, b: Net) -> Option<Net> {
    if a.family != b.family || a.prefix != b.prefix || a.prefix == 0 {
        return None;
    }
    let parent = Net::new(a.family, a.addr, a.prefix - 1);
    (parent.addr == Net::new(b.family, b.addr, b.prefix - 1).addr && a.addr != b.addr)
        .then_some(parent)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn net(s: &str) -> Net {
        parse_cidr(s).unwrap()
    }

    #[test]
    fn parsing_masks_host_bits_and_refuses_bad_prefixes() {
        assert_eq!(net("10.1.2.3/8").to_go_string(), "10.0.0.0/8");
        assert_eq!(net("2001:db8::1/32").to_go_string(), "2001:db8::/32");
        assert_eq!(net("::ffff:10.0.0.0/104").to_go_string(), "10.0.0.0/8");
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/x",
            "::/129",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aggregation_joins_siblings_and_drops_covered_networks() {
        let got: Vec<String> = aggregate(vec![
            net("192.0.128.0/24"),
            net("192.0.129.0/24"),
            net("192.0.130.0/24"),
            net("192.0.131.0/24"),
            net("192.0.130.7/32"),
            net("10.0.0.0/8"),
            net("::/1"),
            net("8000::/1"),
        ])
        .into_iter()
        .map(Net::to_go_string)
        .collect();
        assert_eq!(got, ["10.0.0.0/8", "192.0.128.0/22", "::/0"]);
    }
}
