//! The filter language: the part of tcpdump's (pcap-filter) syntax nightcap evaluates in the
//! kernel, with tcpdump's meaning.
//!
//! ```text
//! expr      := unary (("and" | "&&" | "or" | "||") unary)*     left to right, equal precedence
//! unary     := ("not" | "!") unary | "(" expr ")" | primitive
//! primitive := proto [dir] kind value | proto | [dir] kind value | dir value | value
//!            | "inbound" | "outbound"
//! proto     := tcp | udp | sctp | icmp | icmp6 | ip | ip6
//! dir       := src | dst | src or dst | src and dst
//! kind      := host IP | net CIDR | port N | portrange A-B
//! ```
//!
//! As in tcpdump, `and` and `or` bind equally and associate to the left (`a or b and c` is
//! `(a or b) and c`), and a bare value repeats the previous qualifiers (`tcp dst port 80 or 443`
//! is `tcp dst port 80 or tcp dst port 443`).

mod lex;
mod values;

use std::net::IpAddr;

use lex::{Token, lex};
use values::{build, default_kind, unknown_word, well_known_port};

use super::{Atom, Family, FilterError, proto};

/// A parsed expression (before normalisation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Always true (e.g. no expression at all).
    True,
    /// One test.
    Atom(Atom),
    /// Negation.
    Not(Box<Expr>),
    /// Both hold.
    And(Box<Expr>, Box<Expr>),
    /// Either holds.
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    pub(crate) fn and(a: Expr, b: Expr) -> Expr {
        Expr::And(Box::new(a), Box::new(b))
    }
    pub(crate) fn or(a: Expr, b: Expr) -> Expr {
        Expr::Or(Box::new(a), Box::new(b))
    }
    pub(crate) fn not(a: Expr) -> Expr {
        Expr::Not(Box::new(a))
    }

    /// Evaluates the expression tree directly (a second reference, used to check compilation).
    pub fn eval(&self, p: &super::PacketFields) -> bool {
        match self {
            Expr::True => true,
            Expr::Atom(a) => a.holds(p),
            Expr::Not(x) => !x.eval(p),
            Expr::And(a, b) => a.eval(p) && b.eval(p),
            Expr::Or(a, b) => a.eval(p) || b.eval(p),
        }
    }
}

const SUPPORTED: &str = "supported: tcp, udp, sctp, icmp, icmp6, ip, ip6, [src|dst] host IP, \
                         [src|dst] net CIDR, [src|dst] port N, [src|dst] portrange A-B, inbound, \
                         outbound, and, or, not, parentheses";

/// Parses a filter expression.
pub fn parse(input: &str) -> Result<Expr, FilterError> {
    let tokens = lex(input)?;
    if tokens.is_empty() {
        return Err(FilterError::new(
            1,
            "the filter is empty",
            Some("leave it out to capture everything, or write e.g. 'udp port 53'".into()),
        ));
    }
    let mut p = Parser {
        tokens,
        at: 0,
        end: input.chars().count() + 1,
        last: None,
    };
    let expr = p.expr()?;
    if let Some(t) = p.peek() {
        let hint = if t.text == ")" {
            "remove it or add the matching '('"
        } else {
            "join primitives with 'and' or 'or'"
        };
        return Err(FilterError::new(
            t.pos,
            format!("unexpected {:?}", t.text),
            Some(hint.into()),
        ));
    }
    Ok(expr)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProtoQ {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmp6,
    Ip,
    Ip6,
}

impl ProtoQ {
    fn from_word(w: &str) -> Option<Self> {
        Some(match w {
            "tcp" => Self::Tcp,
            "udp" => Self::Udp,
            "sctp" => Self::Sctp,
            "icmp" => Self::Icmp,
            "icmp6" => Self::Icmp6,
            "ip" => Self::Ip,
            "ip6" => Self::Ip6,
            _ => return None,
        })
    }

    fn atom(self) -> Atom {
        let p = |proto, family| Atom::Proto { proto, family };
        match self {
            Self::Tcp => p(proto::TCP, None),
            Self::Udp => p(proto::UDP, None),
            Self::Sctp => p(proto::SCTP, None),
            Self::Icmp => p(proto::ICMP, Some(Family::V4)),
            Self::Icmp6 => p(proto::ICMPV6, Some(Family::V6)),
            Self::Ip => Atom::Family(Family::V4),
            Self::Ip6 => Atom::Family(Family::V6),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
            Self::Icmp => "icmp",
            Self::Icmp6 => "icmp6",
            Self::Ip => "ip",
            Self::Ip6 => "ip6",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirQ {
    Src,
    Dst,
    SrcOrDst,
    SrcAndDst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Host,
    Net,
    Port,
    PortRange,
}

impl Kind {
    fn from_word(w: &str) -> Option<Self> {
        Some(match w {
            "host" => Self::Host,
            "net" => Self::Net,
            "port" => Self::Port,
            "portrange" => Self::PortRange,
            _ => return None,
        })
    }
}

/// The qualifiers of the last primitive, repeated by a bare value.
#[derive(Debug, Clone, Copy)]
struct Quals {
    proto: Option<ProtoQ>,
    dir: Option<DirQ>,
    kind: Kind,
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    end: usize,
    last: Option<Quals>,
}

fn is_binop(w: &str) -> bool {
    matches!(w, "and" | "&&" | "or" | "||")
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn peek_text(&self, ahead: usize) -> Option<&str> {
        self.tokens.get(self.at + ahead).map(|t| t.text.as_str())
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn expect_more(&mut self, what: &str, hint: &str) -> Result<Token, FilterError> {
        self.next().ok_or_else(|| {
            FilterError::new(
                self.end,
                format!("the filter ends where {what} was expected"),
                Some(hint.into()),
            )
        })
    }

    fn expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while let Some(op) = self.peek_text(0).filter(|w| is_binop(w)) {
            let is_and = op == "and" || op == "&&";
            self.at += 1;
            let right = self.unary()?;
            left = if is_and {
                Expr::and(left, right)
            } else {
                Expr::or(left, right)
            };
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        let t = self.expect_more(
            "a primitive",
            "add a primitive such as 'port 53' or 'host 10.0.0.1'",
        )?;
        match t.text.as_str() {
            "not" | "!" => Ok(Expr::not(self.unary()?)),
            "(" => {
                let inner = self.expr()?;
                match self.next() {
                    Some(c) if c.text == ")" => Ok(inner),
                    Some(c) => Err(FilterError::new(
                        c.pos,
                        format!("expected ')' or 'and'/'or', found {:?}", c.text),
                        Some(format!("close the '(' opened at position {}", t.pos)),
                    )),
                    None => Err(FilterError::new(
                        self.end,
                        "missing ')'",
                        Some(format!("close the '(' opened at position {}", t.pos)),
                    )),
                }
            }
            ")" => Err(FilterError::new(
                t.pos,
                "unexpected ')'",
                Some("a primitive such as 'port 53' must come first".into()),
            )),
            w if is_binop(w) => Err(FilterError::new(
                t.pos,
                format!("unexpected {w:?}"),
                Some("a primitive such as 'port 53' must come before and after it".into()),
            )),
            _ => self.primitive(t),
        }
    }

    fn primitive(&mut self, first: Token) -> Result<Expr, FilterError> {
        let word = first.text.as_str();
        match word {
            "inbound" => return Ok(Expr::not(Expr::Atom(Atom::Outbound))),
            "outbound" => return Ok(Expr::Atom(Atom::Outbound)),
            _ => {}
        }
        let mut t = first.clone();
        let proto = ProtoQ::from_word(&t.text);
        if let Some(pq) = proto {
            match self.peek_text(0) {
                Some(w) if w == "src" || w == "dst" || Kind::from_word(w).is_some() => {
                    t = self.next().expect("peeked");
                }
                _ => return Ok(Expr::Atom(pq.atom())),
            }
            if pq != ProtoQ::Tcp && pq != ProtoQ::Udp && pq != ProtoQ::Sctp {
                let kind = Kind::from_word(&t.text);
                if matches!(kind, Some(Kind::Port | Kind::PortRange)) {
                    return Err(FilterError::new(
                        t.pos,
                        format!("{} has no ports", pq.name()),
                        Some("use tcp, udp or sctp with port/portrange, or no protocol".into()),
                    ));
                }
            }
        }
        let dir = match t.text.as_str() {
            "src" | "dst" => {
                let d = t.text.clone();
                let other = if d == "src" { "dst" } else { "src" };
                let combined = match (self.peek_text(0), self.peek_text(1)) {
                    (Some("or"), Some(o)) if o == other => Some(DirQ::SrcOrDst),
                    (Some("and"), Some(o)) if o == other => Some(DirQ::SrcAndDst),
                    _ => None,
                };
                if combined.is_some() {
                    self.at += 2;
                }
                t = self.expect_more(
                    "host, net, port or portrange",
                    &format!("e.g. '{d} host 10.0.0.1' or '{d} port 53'"),
                )?;
                Some(combined.unwrap_or(if d == "src" { DirQ::Src } else { DirQ::Dst }))
            }
            _ => None,
        };
        let (kind, value) = match Kind::from_word(&t.text) {
            Some(kind) => {
                let v = self.expect_more(
                    "a value",
                    match kind {
                        Kind::Host => "e.g. 'host 10.0.0.1' or 'host fd00::1'",
                        Kind::Net => "e.g. 'net 10.0.0.0/8'",
                        Kind::Port => "e.g. 'port 53'",
                        Kind::PortRange => "e.g. 'portrange 8000-8080'",
                    },
                )?;
                (kind, v)
            }
            None if proto.is_none() && dir.is_none() => return self.bare_value(t),
            None => (default_kind(&t), t),
        };
        if let Some(pq) = proto
            && matches!(kind, Kind::Host | Kind::Net)
            && pq != ProtoQ::Ip
            && pq != ProtoQ::Ip6
        {
            return Err(FilterError::new(
                first.pos,
                format!("'{} host/net' is not a tcpdump primitive", pq.name()),
                Some(format!("write '{} and host …'", pq.name())),
            ));
        }
        let quals = Quals { proto, dir, kind };
        self.last = Some(quals);
        build(quals, &value)
    }

    /// A value without qualifiers: repeats the previous primitive's qualifiers, else a host.
    fn bare_value(&mut self, t: Token) -> Result<Expr, FilterError> {
        let looks_like_value = t.text.starts_with(|c: char| c.is_ascii_digit())
            || t.text.contains(':')
            || well_known_port(&t.text).is_some();
        if let Some(quals) = self.last
            && looks_like_value
        {
            return build(quals, &t);
        }
        if t.text.parse::<IpAddr>().is_ok() || t.text.contains('/') {
            let quals = Quals {
                proto: None,
                dir: None,
                kind: default_kind(&t),
            };
            self.last = Some(quals);
            return build(quals, &t);
        }
        Err(unknown_word(&t))
    }
}
