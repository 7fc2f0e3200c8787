//! `net.cidr_intersects`, `net.cidr_overlap` and `net.cidr_merge` (OPA's
//! `v1/topdown/cidr.go`), with Go's `net` semantics: an IPv4-mapped IPv6 address is
//! an IPv4 address, a CIDR's host bits are masked away when parsed, and an IPv4
//! network never contains an IPv6 address nor the reverse.

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

    #[cfg(test)]
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

/// A `net.cidr_merge` element as OPA's `generateIPNet` and `newCIDRBlockRange` see
/// it: an address range over the integer value of the address's bytes, 4 of them for
/// an address written as IPv4, 16 otherwise (an IPv4-mapped network stays 16 bytes
/// long). A bare IPv4 address takes its class's default mask (Go's
/// `IP.DefaultMask`: `10.0.0.1` is `10.0.0.0/8`); a bare IPv6 address is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Range {
    first: u128,
    last: u128,
    bytes: u8,
}

fn range(bytes: u8, addr: u128, prefix: u8) -> Range {
    let bits = bytes * 8;
    let host = u32::from(bits - prefix.min(bits));
    let span = if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    };
    let first = addr & !span;
    Range {
        first,
        last: first | span,
        bytes,
    }
}

fn merge_element(args: &Args<'_>, v: &Value) -> Result<Range, CallError> {
    let Value::String(s) = v else {
        return Err(args.error("element must be string"));
    };
    if let Some(ip) = parse_ip(s) {
        let (family, addr) = canonical(ip);
        if family == Family::V6 {
            return Err(args.error("IPv6 invalid: needs prefix length"));
        }
        let first = (addr >> 24) as u8;
        let prefix = match first {
            0..=127 => 8,
            128..=191 => 16,
            192..=223 => 24,
            _ => return Err(args.error(format!("no default mask for {s}"))),
        };
        return Ok(range(4, addr, prefix));
    }
    let invalid = || args.error(format!("invalid CIDR address: {s}"));
    let (ip, prefix) = s.split_once('/').ok_or_else(invalid)?;
    let ip = parse_ip(ip).ok_or_else(invalid)?;
    let prefix: u8 = prefix
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| prefix.parse().ok())
        .flatten()
        .ok_or_else(invalid)?;
    match ip {
        IpAddr::V4(v4) if prefix <= 32 => Ok(range(4, u128::from(u32::from(v4)), prefix)),
        IpAddr::V6(v6) if prefix <= 128 => Ok(range(16, u128::from(v6), prefix)),
        _ => Err(invalid()),
    }
}

fn merge(args: &Args<'_>) -> CallResult {
    let items: Vec<&Value> = match args.get(0)? {
        Value::Array(items) => items.iter().collect(),
        Value::Set(items) => items.iter().collect(),
        _ => return Err(args.type_error(0, "any<array<any<string>>, set<any<string>>>")),
    };
    let mut ranges: Vec<Range> = items
        .into_iter()
        .map(|v| merge_element(args, v))
        .collect::<Result<_, _>>()?;
    ranges.sort();
    // Overlapping or adjacent ranges join, whatever their byte lengths (as OPA's
    // comparisons of the addresses' integer values do); the longer length wins.
    let mut merged: Vec<Range> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(m) if r.first <= m.last.saturating_add(1) => {
                m.last = m.last.max(r.last);
                m.bytes = m.bytes.max(r.bytes);
            }
            _ => merged.push(r),
        }
    }
    let mut out = std::collections::BTreeSet::new();
    for r in merged {
        for (addr, prefix) in blocks(r) {
            out.insert(Value::from(go_net_string(r.bytes, addr, prefix)));
        }
    }
    Ok(Value::from(out))
}

/// The fewest aligned blocks covering `r`.
fn blocks(r: Range) -> Vec<(u128, u8)> {
    let bits = u32::from(r.bytes) * 8;
    let mut out = Vec::new();
    let mut start = r.first;
    loop {
        // The largest block aligned at `start` that ends within the range.
        let mut host = if start == 0 {
            bits
        } else {
            start.trailing_zeros().min(bits)
        };
        while host > 0 {
            let span = if host >= 128 {
                u128::MAX
            } else {
                (1u128 << host) - 1
            };
            if start.checked_add(span).is_some_and(|end| end <= r.last) {
                break;
            }
            host -= 1;
        }
        let span = if host >= 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        };
        out.push((start, u8::try_from(bits - host).unwrap_or(0)));
        match start.checked_add(span).and_then(|e| e.checked_add(1)) {
            Some(next) if next <= r.last => start = next,
            _ => return out,
        }
    }
}

/// Go's `IPNet.String()`: an IPv4-mapped 16-byte network prints as IPv4 with the
/// IPv4 part of its prefix.
fn go_net_string(bytes: u8, addr: u128, prefix: u8) -> String {
    if bytes == 4 {
        let v4 = Ipv4Addr::from(u32::try_from(addr).unwrap_or(0));
        return format!("{v4}/{prefix}");
    }
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => format!("{v4}/{}", prefix.saturating_sub(96)),
        None => format!("{v6}/{prefix}"),
    }
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
    fn merging_joins_adjacent_ranges_into_aligned_blocks() {
        let r = |bytes, first, last| Range { first, last, bytes };
        assert_eq!(blocks(r(4, 0, u128::from(u32::MAX))), [(0, 0)]);
        // 10.0.0.0 .. 10.0.2.255: a /23 and a /24.
        assert_eq!(
            blocks(r(4, 0x0a00_0000, 0x0a00_02ff)),
            [(0x0a00_0000, 23), (0x0a00_0200, 24)]
        );
        assert_eq!(blocks(r(16, 0, u128::MAX)), [(0, 0)]);
        assert_eq!(go_net_string(16, 0xffff_0a00_0000, 104), "10.0.0.0/8");
    }
}
