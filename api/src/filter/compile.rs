//! Expression and structured filters → rule table (disjunctive normal form), exactly.

use std::collections::BTreeMap;

use super::{Atom, Expr, Family, FilterError, MAX_RULES, Rule, RuleTable, Side, parse, proto};
use crate::{
    capture::{CaptureFilter, Direction, Protocol},
    validation::validate_cidr,
};

/// Largest intermediate DNF kept while expanding; beyond it the filter is refused (the final
/// table would not fit anyway unless absorption shrinks it enormously).
const MAX_INTERMEDIATE: usize = 16 * MAX_RULES;

/// A conjunction: atom → required truth value.
type Clause = BTreeMap<Atom, bool>;

/// Compiles a PacketCapture's `expression` and `filters` (ANDed) into one rule table.
pub fn compile(
    expression: Option<&str>,
    filters: &[CaptureFilter],
) -> Result<RuleTable, FilterError> {
    let expr = match expression {
        Some(text) => parse(text)?,
        None => Expr::True,
    };
    to_table(&Expr::and(expr, compile_filters(filters)?))
}

/// Compiles an expression alone.
pub fn compile_expression(text: &str) -> Result<RuleTable, FilterError> {
    to_table(&parse(text)?)
}

/// The structured filters as an expression: (any include, or true when there is none) and no
/// exclude. Within a filter, protocol, ports (either side), CIDRs (either side) and direction
/// are ANDed; the entries of one list are ORed.
pub fn compile_filters(filters: &[CaptureFilter]) -> Result<Expr, FilterError> {
    let mut include: Option<Expr> = None;
    let mut exclude = Expr::True;
    for (i, f) in filters.iter().enumerate() {
        let e = filter_expr(i, f)?;
        if f.exclude {
            exclude = Expr::and(exclude, Expr::not(e));
        } else {
            include = Some(match include {
                None => e,
                Some(prev) => Expr::or(prev, e),
            });
        }
    }
    Ok(Expr::and(include.unwrap_or(Expr::True), exclude))
}

fn filter_expr(i: usize, f: &CaptureFilter) -> Result<Expr, FilterError> {
    let mut e = match f.protocol {
        Protocol::Any => Expr::True,
        Protocol::Tcp => proto_atom(proto::TCP, None),
        Protocol::Udp => proto_atom(proto::UDP, None),
        Protocol::Sctp => proto_atom(proto::SCTP, None),
        Protocol::Icmp => proto_atom(proto::ICMP, Some(Family::V4)),
        Protocol::Icmpv6 => proto_atom(proto::ICMPV6, Some(Family::V6)),
    };
    let ports: Vec<Expr> = f
        .ports
        .iter()
        .map(|&p| (p, p))
        .chain(f.port_ranges.iter().map(|r| (r.from, r.to)))
        .map(|(lo, hi)| {
            Expr::Atom(Atom::Port {
                side: Side::Either,
                lo,
                hi,
            })
        })
        .collect();
    if let Some(any) = any_of(ports) {
        e = Expr::and(e, any);
    }
    let mut nets = Vec::new();
    for (j, c) in f.cidrs.iter().enumerate() {
        let net = validate_cidr(c)
            .map_err(|msg| FilterError::new(0, format!("filters[{i}].cidrs[{j}]: {msg}"), None))?;
        nets.push(Expr::Atom(Atom::Net {
            side: Side::Either,
            net,
        }));
    }
    if let Some(any) = any_of(nets) {
        e = Expr::and(e, any);
    }
    match f.direction {
        Direction::Both => {}
        Direction::Egress => e = Expr::and(e, Expr::Atom(Atom::Outbound)),
        Direction::Ingress => e = Expr::and(e, Expr::not(Expr::Atom(Atom::Outbound))),
    }
    Ok(e)
}

fn proto_atom(proto: u8, family: Option<Family>) -> Expr {
    Expr::Atom(Atom::Proto { proto, family })
}

fn any_of(items: Vec<Expr>) -> Option<Expr> {
    items.into_iter().reduce(Expr::or)
}

fn too_complex(n: usize) -> FilterError {
    FilterError::new(
        0,
        format!(
            "the filter expands to more than {n} alternatives; the kernel table holds {MAX_RULES}"
        ),
        Some(
            "use net CIDR or portrange A-B instead of many host/port alternatives, or fewer \
             and-ed groups of ors"
                .into(),
        ),
    )
}

fn dnf(e: &Expr, negate: bool) -> Result<Vec<Clause>, FilterError> {
    Ok(match e {
        Expr::True if negate => Vec::new(),
        Expr::True => vec![Clause::new()],
        Expr::Atom(a) => vec![Clause::from([(*a, !negate)])],
        Expr::Not(x) => dnf(x, !negate)?,
        Expr::And(a, b) | Expr::Or(a, b) => {
            let (x, y) = (dnf(a, negate)?, dnf(b, negate)?);
            // De Morgan: a negated AND is an OR of negations and vice versa.
            if matches!(e, Expr::And(..)) != negate {
                conjoin(x, y)?
            } else {
                let mut all = x;
                all.extend(y);
                if all.len() > MAX_INTERMEDIATE {
                    return Err(too_complex(MAX_INTERMEDIATE));
                }
                simplify(all)
            }
        }
    })
}

fn conjoin(x: Vec<Clause>, y: Vec<Clause>) -> Result<Vec<Clause>, FilterError> {
    let mut out = Vec::new();
    for a in &x {
        'pair: for b in &y {
            let mut c = a.clone();
            for (atom, want) in b {
                match c.insert(*atom, *want) {
                    Some(prev) if prev != *want => continue 'pair, // a and not a
                    _ => {}
                }
            }
            out.push(c);
            if out.len() > MAX_INTERMEDIATE {
                return Err(too_complex(MAX_INTERMEDIATE));
            }
        }
    }
    Ok(simplify(out))
}

/// Exact simplifications: drop duplicates, drop a clause implied by a smaller one
/// (absorption: `x or (x and y)` is `x`), and merge `(x and a) or (x and not a)` into `x`.
fn simplify(mut clauses: Vec<Clause>) -> Vec<Clause> {
    loop {
        clauses.sort_by_key(|c| c.len());
        clauses.dedup();
        let mut kept: Vec<Clause> = Vec::with_capacity(clauses.len());
        for c in clauses {
            let absorbed = kept
                .iter()
                .any(|k| k.iter().all(|(atom, want)| c.get(atom) == Some(want)));
            if !absorbed {
                kept.push(c);
            }
        }
        let mut merged = false;
        'outer: for i in 0..kept.len() {
            for j in i + 1..kept.len() {
                if let Some(atom) = resolvent(&kept[i], &kept[j]) {
                    let mut c = kept[i].clone();
                    c.remove(&atom);
                    kept.swap_remove(j);
                    kept[i] = c;
                    merged = true;
                    break 'outer;
                }
            }
        }
        clauses = kept;
        if !merged {
            return clauses;
        }
    }
}

/// The one atom two clauses disagree on, when they are otherwise identical.
fn resolvent(a: &Clause, b: &Clause) -> Option<Atom> {
    if a.len() != b.len() {
        return None;
    }
    let mut differ = None;
    for ((atom_a, want_a), (atom_b, want_b)) in a.iter().zip(b) {
        if atom_a != atom_b {
            return None;
        }
        if want_a != want_b {
            if differ.is_some() {
                return None;
            }
            differ = Some(*atom_a);
        }
    }
    differ
}

fn to_table(e: &Expr) -> Result<RuleTable, FilterError> {
    let clauses = dnf(e, false)?;
    let mut atoms: Vec<Atom> = Vec::new();
    let mut index: BTreeMap<Atom, usize> = BTreeMap::new();
    for c in &clauses {
        for atom in c.keys() {
            index.entry(*atom).or_insert_with(|| {
                atoms.push(*atom);
                atoms.len() - 1
            });
        }
    }
    if atoms.len() > super::MAX_ATOMS {
        return RuleTable::new(atoms, Vec::new());
    }
    let rules = clauses
        .iter()
        .map(|c| {
            c.iter().fold(Rule { mask: 0, want: 0 }, |r, (atom, want)| {
                let bit = 1u64 << index[atom];
                Rule {
                    mask: r.mask | bit,
                    want: if *want { r.want | bit } else { r.want },
                }
            })
        })
        .collect();
    RuleTable::new(atoms, rules)
}
