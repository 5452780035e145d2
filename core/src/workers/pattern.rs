//! A compiler and matcher for exactly the regular-expression subset that Synapse's worker
//! endpoint table uses, so that the table can be kept verbatim without a regex crate.
//!
//! Supported: a leading `^` (required), literal bytes, `\` followed by punctuation (a literal),
//! `.` (any one byte), `.*`, `[^/]+`, `$` (end of path, also inside groups), and groups
//! `(a|b|c)` with an optional `?` after them (`(/.*/restart)?`, `(/|$)`). Anything else is
//! refused at compile time with the offending position. A pattern without `$` matches any
//! path that *starts* with a match (regex search anchored by `^`).
//!
//! Patterns compile once, at configuration time: parsed, turned into a Thompson NFA, and
//! the NFA into a DFA by subset construction (over byte classes, capped at
//! [`MAX_DFA_STATES`]). Matching walks the DFA over the raw path bytes (no decoding): one
//! table lookup per byte, stopping at the first byte that decides. So an 8 KiB path costs
//! at most 8 Ki lookups per pattern, whatever it holds: there is no backtracking, hence no
//! exponential case, however many `.*` a pattern has. Matching never allocates.
//!
//! A [`PatternSet`] is the same for up to 64 patterns at once — one DFA over their union,
//! started after a prefix of the path the caller already checked — so the router reads a
//! path once per set instead of once per pattern (an 8 KiB hostile path routes in tens of
//! microseconds, a normal one in about a hundred nanoseconds).

use thiserror::Error;

/// The longest program a pattern may compile to (one instruction per literal byte, plus
/// a few per operator). The table's longest pattern needs under 100.
pub const MAX_PROGRAM: usize = 256;
/// How deeply groups may nest.
const MAX_DEPTH: usize = 8;
/// At most this many literal prefixes are derived from a pattern's leading groups.
const MAX_PREFIXES: usize = 32;

/// Why a pattern does not compile. Positions are byte offsets into the pattern.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PatternError {
    #[error("a worker pattern must start with `^`")]
    Unanchored,
    #[error("unsupported syntax {found:?} at byte {at} (supported: literals, `.`, `.*`, `[^/]+`, `$`, `(a|b)`, `(…)?`)")]
    Unsupported { at: usize, found: String },
    #[error("unbalanced parenthesis at byte {at}")]
    Unbalanced { at: usize },
    #[error("empty alternative in group at byte {at}")]
    EmptyAlternative { at: usize },
    #[error("groups nested more than {MAX_DEPTH} deep at byte {at}")]
    TooDeep { at: usize },
    #[error("pattern too long: it compiles to more than {MAX_PROGRAM} instructions")]
    TooLarge,
    #[error("pattern too complex: it needs more than {MAX_DFA_STATES} automaton states")]
    TooComplex,
}

/// The parsed form of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Lit(Vec<u8>),
    /// `.`
    Any,
    /// `.*`
    AnyStar,
    /// `[^/]+`
    NotSlashPlus,
    /// `$`
    End,
    Group {
        alts: Vec<Vec<Node>>,
        optional: bool,
    },
}

/// One NFA instruction. Jump targets are program indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inst {
    Byte(u8),
    Any,
    NotSlash,
    /// Continue at both.
    Split(u16, u16),
    Jmp(u16),
    /// Continue only at the end of the input.
    End,
    Match,
}

/// A compiled pattern: a DFA built from the NFA at compile time.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: Box<str>,
    prefixes: Vec<Box<[u8]>>,
    dfa: Dfa,
    /// The NFA the DFA was built from; [`PatternSet`] builds from it too.
    program: Box<[Inst]>,
}

/// Where a match stands after some input: a DFA state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchState(u16);

/// The outcome of feeding input to a [`Pattern`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Matched already, whatever follows (the pattern has no `$` left to satisfy).
    Matched,
    /// Cannot match, whatever follows.
    Failed,
    /// Undecided: feed more, or [`Pattern::finish`] at the end of the path.
    Continue(MatchState),
}

impl Pattern {
    /// Compiles `source`. Done once per pattern, at configuration time.
    pub fn compile(source: &str) -> Result<Pattern, PatternError> {
        let bytes = source.as_bytes();
        if bytes.first() != Some(&b'^') {
            return Err(PatternError::Unanchored);
        }
        let mut parser = Parser { src: bytes, pos: 1 };
        let nodes = parser.sequence(0)?;
        if parser.pos < bytes.len() {
            // Only a stray `)` stops a top-level sequence early.
            return Err(PatternError::Unbalanced { at: parser.pos });
        }
        let mut program = Vec::new();
        emit_sequence(&nodes, &mut program)?;
        push(&mut program, Inst::Match)?;
        let mut start = BitSet::new(program.len());
        let slots = vec![0u8; program.len()];
        closure(&program, &mut start, 0, false);
        let dfa = Dfa::build(&program, &slots, start)?;
        let mut prefixes: Vec<Box<[u8]>> = literal_prefixes(&nodes)
            .into_iter()
            .map(Vec::into_boxed_slice)
            .collect();
        // Keep the shortest: a route hangs on the first trie node its path reaches.
        prefixes.sort();
        let mut minimal: Vec<Box<[u8]>> = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            if !minimal.iter().any(|m| p.starts_with(m)) {
                minimal.push(p);
            }
        }
        Ok(Pattern {
            source: source.into(),
            prefixes: minimal,
            dfa,
            program: program.into_boxed_slice(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Byte strings one of which every matching path starts with (the leading literals,
    /// with leading groups expanded). Never empty; may hold just `""`.
    pub fn literal_prefixes(&self) -> &[Box<[u8]>] {
        &self.prefixes
    }

    /// Whether the raw path matches: one table lookup per byte at most; never allocates.
    pub fn is_match(&self, path: &[u8]) -> bool {
        match self.feed(self.start(), path) {
            Step::Matched => true,
            Step::Failed => false,
            Step::Continue(state) => self.finish(state),
        }
    }

    /// The state before any input.
    pub fn start(&self) -> MatchState {
        MatchState(self.dfa.start)
    }

    /// Feeds `bytes` from `state`, stopping as soon as the outcome is decided.
    pub fn feed(&self, state: MatchState, bytes: &[u8]) -> Step {
        let dfa = &self.dfa;
        let mut s = state.0 as usize;
        if dfa.accept_now[s] != 0 {
            return Step::Matched;
        }
        for &b in bytes {
            s = dfa.step(s, b);
            if s == DEAD {
                return Step::Failed;
            }
            if dfa.accept_now[s] != 0 {
                return Step::Matched;
            }
        }
        Step::Continue(MatchState(s as u16))
    }

    /// Whether the path matches if it ends in `state`.
    pub fn finish(&self, state: MatchState) -> bool {
        self.dfa.accept_end[state.0 as usize] != 0
    }

    /// The NFA simulation the DFAs are checked against; `steps` counts work done.
    #[cfg(test)]
    fn nfa_match(&self, input: &[u8], steps: &mut u64) -> bool {
        let program = &self.program[..];
        let mut current = BitSet::new(program.len());
        let mut next = BitSet::new(program.len());
        *steps += 1;
        if closure(program, &mut current, 0, input.is_empty()) {
            return true;
        }
        for (i, &byte) in input.iter().enumerate() {
            if current.is_empty() {
                return false;
            }
            let at_end = i + 1 == input.len();
            next.clear();
            for pc in current.iter() {
                *steps += 1;
                if consumes(program[pc], byte) && closure(program, &mut next, pc + 1, at_end) {
                    return true;
                }
            }
            std::mem::swap(&mut current, &mut next);
        }
        false
    }
}

/// Up to 64 patterns matched in one pass, each resumed after a prefix of the path that
/// was already checked (the router's trie): one DFA for all, so a path is read once per
/// set rather than once per pattern.
#[derive(Debug, Clone)]
pub struct PatternSet {
    dfa: Dfa,
    /// Members that matched within their prefix already.
    matched: u64,
    len: usize,
}

/// The most members of a [`PatternSet`].
pub const MAX_SET: usize = 64;

impl PatternSet {
    /// `members`: each pattern with the bytes the path is known to start with. Fails with
    /// [`PatternError::TooComplex`] when the union needs too many states (split the set).
    pub fn new(members: &[(&Pattern, &[u8])]) -> Result<PatternSet, PatternError> {
        if members.len() > MAX_SET {
            return Err(PatternError::TooComplex);
        }
        // One program: the members' programs side by side, jump targets relocated.
        let mut program = Vec::new();
        let mut slots = Vec::new();
        let mut offsets = Vec::new();
        for (slot, (pattern, _)) in members.iter().enumerate() {
            let offset = program.len();
            if offset + pattern.program.len() > u16::MAX as usize {
                return Err(PatternError::TooComplex);
            }
            offsets.push(offset);
            let at = |t: u16| (t as usize + offset) as u16;
            program.extend(pattern.program.iter().map(|&inst| match inst {
                Inst::Split(a, b) => Inst::Split(at(a), at(b)),
                Inst::Jmp(a) => Inst::Jmp(at(a)),
                other => other,
            }));
            slots.extend(std::iter::repeat_n(slot as u8, pattern.program.len()));
        }
        // Each member's NFA states after its prefix, in the union program.
        let mut start = BitSet::new(program.len());
        let mut matched = 0u64;
        for (slot, (pattern, prefix)) in members.iter().enumerate() {
            let own = &pattern.program[..];
            let mut current = BitSet::new(own.len());
            let mut hit = closure(own, &mut current, 0, false);
            for &byte in prefix.iter() {
                if hit {
                    break;
                }
                let mut next = BitSet::new(own.len());
                for pc in current.iter() {
                    if consumes(own[pc], byte) {
                        hit |= closure(own, &mut next, pc + 1, false);
                    }
                }
                current = next;
            }
            if hit {
                matched |= 1 << slot;
            } else {
                current.iter().for_each(|pc| {
                    start.insert(pc + offsets[slot]);
                });
            }
        }
        Ok(PatternSet {
            dfa: Dfa::build(&program, &slots, start)?,
            matched,
            len: members.len(),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lowest-numbered member among `eligible` (a bit per member) that matches a path
    /// whose remainder after the prefixes is `rest`. Stops reading as soon as no
    /// lower-numbered eligible member can still match.
    pub fn first_match(&self, rest: &[u8], eligible: u64) -> Option<usize> {
        let dfa = &self.dfa;
        let below = |found: u64| {
            if found == 0 {
                u64::MAX
            } else {
                (1u64 << found.trailing_zeros()) - 1
            }
        };
        let mut s = dfa.start as usize;
        let mut found = (self.matched | dfa.accept_now[s]) & eligible;
        for &b in rest {
            if dfa.alive[s] & eligible & !found & below(found) == 0 {
                break;
            }
            s = dfa.step(s, b);
            found |= dfa.accept_now[s] & eligible;
        }
        if dfa.alive[s] & eligible & !found & below(found) != 0 {
            // All read (an early stop leaves nothing pending): the end decides the rest.
            found |= dfa.accept_end[s] & eligible;
        }
        (found != 0).then(|| found.trailing_zeros() as usize)
    }
}

/// Whether instruction `inst` consumes `byte`.
fn consumes(inst: Inst, byte: u8) -> bool {
    match inst {
        Inst::Byte(b) => b == byte,
        Inst::Any => true,
        Inst::NotSlash => byte != b'/',
        _ => false,
    }
}

/// Adds `pc` and everything reachable from it without consuming input to `set`. Returns
/// whether a `Match` is reachable. `End` is passed only `at_end`.
fn closure(program: &[Inst], set: &mut BitSet, pc: usize, at_end: bool) -> bool {
    let mut stack = Vec::new();
    if set.insert(pc) {
        stack.push(pc);
    }
    let mut matched = false;
    while let Some(pc) = stack.pop() {
        let mut follow = |to: usize| {
            if set.insert(to) {
                stack.push(to);
            }
        };
        match program[pc] {
            Inst::Split(a, b) => {
                follow(a as usize);
                follow(b as usize);
            }
            Inst::Jmp(a) => follow(a as usize),
            Inst::End => {
                if at_end {
                    follow(pc + 1);
                }
            }
            Inst::Match => matched = true,
            Inst::Byte(_) | Inst::Any | Inst::NotSlash => {}
        }
    }
    matched
}

/// The most DFA states a pattern or a [`PatternSet`] may need. The table's patterns need a
/// few dozen each: their `.*` are followed by short literals, which keeps the subset
/// construction small.
pub const MAX_DFA_STATES: usize = 4096;
/// The state no input leads out of.
const DEAD: usize = 0;

/// A DFA over byte classes (bytes no instruction names share one class). Each NFA
/// instruction belongs to a slot (a member of a set; always 0 for a single pattern), and
/// each DFA state says which slots have matched and which are still alive.
#[derive(Debug, Clone)]
struct Dfa {
    classes: [u8; 256],
    /// Classes per state.
    stride: usize,
    /// `next[state * stride + class]`.
    next: Box<[u16]>,
    /// Slots whose match is decided in this state, whatever follows.
    accept_now: Box<[u64]>,
    /// Slots that match if the path ends in this state.
    accept_end: Box<[u64]>,
    /// Slots with NFA states in this state.
    alive: Box<[u64]>,
    start: u16,
}

impl Dfa {
    fn step(&self, state: usize, byte: u8) -> usize {
        self.next[state * self.stride + self.classes[byte as usize] as usize] as usize
    }

    /// Subset construction from the NFA states `start` (done at configuration time).
    fn build(program: &[Inst], slots: &[u8], start: BitSet) -> Result<Dfa, PatternError> {
        // Byte classes: each byte a `Byte` instruction names, `/`, and everything else.
        let mut named = [false; 256];
        named[b'/' as usize] = true;
        for inst in program {
            if let Inst::Byte(b) = inst {
                named[*b as usize] = true;
            }
        }
        let mut classes = [0u8; 256];
        let mut representatives = vec![named.iter().position(|n| !n).unwrap_or(0) as u8];
        for (b, _) in named.iter().enumerate().filter(|(_, &n)| n) {
            classes[b] = representatives.len() as u8;
            representatives.push(b as u8);
        }
        let stride = representatives.len();

        let empty = BitSet::new(program.len());
        let mut sets = vec![empty.clone()];
        let mut index = std::collections::HashMap::new();
        index.insert(empty, DEAD as u16);
        let start_id = if start.is_empty() {
            DEAD as u16
        } else {
            index.insert(start.clone(), 1);
            sets.push(start);
            1
        };
        let mut next = vec![0u16; stride * sets.len()];
        // The dead state needs no work: all its edges lead to itself.
        let mut done = 1;
        while done < sets.len() {
            for (class, &byte) in representatives.iter().enumerate() {
                let mut target = BitSet::new(program.len());
                for pc in sets[done].iter() {
                    if consumes(program[pc], byte) {
                        closure(program, &mut target, pc + 1, false);
                    }
                }
                let id = match index.get(&target) {
                    Some(&id) => id,
                    None => {
                        if sets.len() >= MAX_DFA_STATES {
                            return Err(PatternError::TooComplex);
                        }
                        let id = sets.len() as u16;
                        index.insert(target.clone(), id);
                        sets.push(target);
                        next.resize(stride * sets.len(), 0);
                        id
                    }
                };
                next[done * stride + class] = id;
            }
            done += 1;
        }
        let matches = |set: &BitSet| {
            set.iter()
                .filter(|&pc| program[pc] == Inst::Match)
                .fold(0u64, |m, pc| m | 1 << slots[pc])
        };
        let accept_now = sets.iter().map(matches).collect();
        let accept_end = sets
            .iter()
            .map(|set| {
                let mut at_end = BitSet::new(program.len());
                set.iter().for_each(|pc| {
                    closure(program, &mut at_end, pc, true);
                });
                matches(&at_end)
            })
            .collect();
        let alive = sets
            .iter()
            .map(|set| set.iter().fold(0u64, |m, pc| m | 1 << slots[pc]))
            .collect();
        Ok(Dfa {
            classes,
            stride,
            next: next.into_boxed_slice(),
            accept_now,
            accept_end,
            alive,
            start: start_id,
        })
    }
}

/// A set of program counters (configuration time only).
#[derive(Clone, PartialEq, Eq, Hash)]
struct BitSet(Box<[u64]>);

impl BitSet {
    fn new(bits: usize) -> Self {
        BitSet(vec![0; bits.div_ceil(64)].into_boxed_slice())
    }

    /// Inserts; false if already present.
    fn insert(&mut self, pc: usize) -> bool {
        let (word, bit) = (pc / 64, 1u64 << (pc % 64));
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }

    #[cfg(test)]
    fn clear(&mut self) {
        self.0.iter_mut().for_each(|w| *w = 0);
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &word)| {
            let mut w = word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(i * 64 + bit)
            })
        })
    }
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn unsupported(&self, at: usize, len: usize) -> PatternError {
        let end = (at + len).min(self.src.len());
        PatternError::Unsupported {
            at,
            found: String::from_utf8_lossy(&self.src[at..end]).into_owned(),
        }
    }

    /// Parses items until `|`, `)` or the end.
    fn sequence(&mut self, depth: usize) -> Result<Vec<Node>, PatternError> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut lit = Vec::new();
        let flush = |lit: &mut Vec<u8>, nodes: &mut Vec<Node>| {
            if !lit.is_empty() {
                nodes.push(Node::Lit(std::mem::take(lit)));
            }
        };
        while let Some(c) = self.peek() {
            let at = self.pos;
            match c {
                b'|' | b')' => break,
                b'\\' => match self.src.get(at + 1) {
                    Some(&e) if e.is_ascii_punctuation() => {
                        lit.push(e);
                        self.pos += 2;
                    }
                    _ => return Err(self.unsupported(at, 2)),
                },
                b'.' => {
                    flush(&mut lit, &mut nodes);
                    if self.src.get(at + 1) == Some(&b'*') {
                        nodes.push(Node::AnyStar);
                        self.pos += 2;
                    } else {
                        nodes.push(Node::Any);
                        self.pos += 1;
                    }
                }
                b'[' => {
                    if self.src[at..].starts_with(b"[^/]+") {
                        flush(&mut lit, &mut nodes);
                        nodes.push(Node::NotSlashPlus);
                        self.pos += 5;
                    } else {
                        return Err(self.unsupported(at, 5));
                    }
                }
                b'$' => {
                    flush(&mut lit, &mut nodes);
                    nodes.push(Node::End);
                    self.pos += 1;
                }
                b'(' => {
                    flush(&mut lit, &mut nodes);
                    if depth + 1 > MAX_DEPTH {
                        return Err(PatternError::TooDeep { at });
                    }
                    self.pos += 1;
                    let mut alts = Vec::new();
                    loop {
                        let start = self.pos;
                        let alt = self.sequence(depth + 1)?;
                        if alt.is_empty() {
                            return Err(PatternError::EmptyAlternative { at: start });
                        }
                        alts.push(alt);
                        match self.peek() {
                            Some(b'|') => self.pos += 1,
                            Some(b')') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(PatternError::Unbalanced { at }),
                        }
                    }
                    let optional = self.peek() == Some(b'?');
                    if optional {
                        self.pos += 1;
                    }
                    nodes.push(Node::Group { alts, optional });
                }
                b'^' | b'*' | b'+' | b'?' | b'{' | b'}' | b']' => {
                    return Err(self.unsupported(at, 1));
                }
                _ => {
                    lit.push(c);
                    self.pos += 1;
                }
            }
        }
        flush(&mut lit, &mut nodes);
        if depth == 0 && self.peek() == Some(b'|') {
            // Top-level alternation would defeat the required `^`: `^a|b`.
            return Err(self.unsupported(self.pos, 1));
        }
        Ok(nodes)
    }
}

fn push(program: &mut Vec<Inst>, inst: Inst) -> Result<usize, PatternError> {
    if program.len() >= MAX_PROGRAM {
        return Err(PatternError::TooLarge);
    }
    program.push(inst);
    Ok(program.len() - 1)
}

/// Program index as a jump target (the program is bounded by [`MAX_PROGRAM`]).
fn target(pc: usize) -> u16 {
    pc as u16
}

fn emit_sequence(nodes: &[Node], program: &mut Vec<Inst>) -> Result<(), PatternError> {
    for node in nodes {
        match node {
            Node::Lit(bytes) => {
                for &b in bytes {
                    push(program, Inst::Byte(b))?;
                }
            }
            Node::Any => {
                push(program, Inst::Any)?;
            }
            Node::AnyStar => {
                // L: split(L+1, out); L+1: any; jmp L; out:
                let split = push(program, Inst::Split(0, 0))?;
                push(program, Inst::Any)?;
                push(program, Inst::Jmp(target(split)))?;
                let out = program.len();
                program[split] = Inst::Split(target(split + 1), target(out));
            }
            Node::NotSlashPlus => {
                // L: not-slash; split(L, out); out:
                let first = push(program, Inst::NotSlash)?;
                let split = push(program, Inst::Split(0, 0))?;
                program[split] = Inst::Split(target(first), target(split + 1));
            }
            Node::End => {
                push(program, Inst::End)?;
            }
            Node::Group { alts, optional } => {
                // opt: split(alts, out)
                // each alt but the last: split(this, next alt); this…; jmp out
                let skip = if *optional {
                    Some(push(program, Inst::Split(0, 0))?)
                } else {
                    None
                };
                let mut exits = Vec::new();
                for (i, alt) in alts.iter().enumerate() {
                    let last = i + 1 == alts.len();
                    let split = if last {
                        None
                    } else {
                        Some(push(program, Inst::Split(0, 0))?)
                    };
                    emit_sequence(alt, program)?;
                    if !last {
                        exits.push(push(program, Inst::Jmp(0))?);
                    }
                    if let Some(split) = split {
                        program[split] = Inst::Split(target(split + 1), target(program.len()));
                    }
                }
                let out = program.len();
                for exit in exits {
                    program[exit] = Inst::Jmp(target(out));
                }
                if let Some(skip) = skip {
                    program[skip] = Inst::Split(target(skip + 1), target(out));
                }
            }
        }
    }
    Ok(())
}

/// The literal prefixes of a sequence, each with whether it is still open: it spells a
/// whole path through the sequence so far, so the literals after it may extend it.
fn expand(nodes: &[Node]) -> Vec<(Vec<u8>, bool)> {
    let mut out = vec![(Vec::new(), true)];
    for node in nodes {
        match node {
            Node::Lit(bytes) => out
                .iter_mut()
                .filter(|(_, open)| *open)
                .for_each(|(p, _)| p.extend_from_slice(bytes)),
            Node::Group {
                alts,
                optional: false,
            } => {
                let parts: Vec<(Vec<u8>, bool)> = alts.iter().flat_map(|a| expand(a)).collect();
                let open = out.iter().filter(|(_, open)| *open).count();
                if out.len() - open + open * parts.len() > MAX_PREFIXES {
                    out.iter_mut().for_each(|(_, open)| *open = false);
                    break;
                }
                let mut next = Vec::new();
                for (p, is_open) in out {
                    if !is_open {
                        next.push((p, false));
                        continue;
                    }
                    for (a, a_open) in &parts {
                        let mut joined = p.clone();
                        joined.extend_from_slice(a);
                        next.push((joined, *a_open));
                    }
                }
                out = next;
            }
            // Anything else ends every prefix here.
            _ => {
                out.iter_mut().for_each(|(_, open)| *open = false);
                break;
            }
        }
    }
    out
}

fn literal_prefixes(nodes: &[Node]) -> Vec<Vec<u8>> {
    expand(nodes).into_iter().map(|(p, _)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        Pattern::compile(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .is_match(path.as_bytes())
    }

    #[test]
    fn literals_and_end_anchor() {
        assert!(m("^/_matrix/client/versions$", "/_matrix/client/versions"));
        assert!(!m(
            "^/_matrix/client/versions$",
            "/_matrix/client/versionsX"
        ));
        assert!(!m("^/_matrix/client/versions$", "/_matrix/client/version"));
        assert!(!m(
            "^/_matrix/client/versions$",
            "x/_matrix/client/versions"
        ));
        // Without `$`, a prefix match.
        assert!(m("^/_matrix/key/v2/query", "/_matrix/key/v2/query/x"));
        assert!(m("^/_matrix/key/v2/query", "/_matrix/key/v2/query"));
        assert!(!m("^/_matrix/key/v2/query", "/_matrix/key/v2/quer"));
    }

    #[test]
    fn alternation() {
        let p = "^/_matrix/client/(api/v1|r0|v3|unstable)/login$";
        for v in ["api/v1", "r0", "v3", "unstable"] {
            assert!(m(p, &format!("/_matrix/client/{v}/login")), "{v}");
        }
        assert!(!m(p, "/_matrix/client/v1/login"));
        assert!(!m(p, "/_matrix/client/api/login"));
        assert!(!m(p, "/_matrix/client//login"));
    }

    #[test]
    fn groups_holding_end_and_stars() {
        let devices = "^/_matrix/client/(api/v1|r0|v3|unstable)/devices(/|$)";
        assert!(m(devices, "/_matrix/client/v3/devices"));
        assert!(m(devices, "/_matrix/client/v3/devices/ABC"));
        assert!(!m(devices, "/_matrix/client/v3/devicesX"));
        let delayed = "^/_matrix/client/unstable/org.matrix.msc4140/delayed_events(/.*/restart)?$";
        let base = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events";
        assert!(m(delayed, base));
        assert!(m(delayed, &format!("{base}/abc/restart")));
        assert!(!m(delayed, &format!("{base}/abc")));
        assert!(!m(delayed, &format!("{base}/abc/restartx")));
        let aliases = "^/_matrix/client/(api/v1|r0|v3|unstable/.*)/rooms/.*/aliases";
        assert!(m(
            aliases,
            "/_matrix/client/unstable/org.matrix.msc2432/rooms/!r:x/aliases"
        ));
        assert!(m(aliases, "/_matrix/client/v3/rooms/!r:x/aliases"));
        assert!(!m(aliases, "/_matrix/client/v1/rooms/!r:x/aliases"));
    }

    #[test]
    fn not_slash_plus_and_dot() {
        let p = "^/_synapse/admin/v1/rooms/[^/]+$";
        assert!(m(p, "/_synapse/admin/v1/rooms/!r:x"));
        assert!(!m(p, "/_synapse/admin/v1/rooms/"));
        assert!(!m(p, "/_synapse/admin/v1/rooms/!r:x/members"));
        // Raw bytes: an encoded slash is not a slash.
        assert!(m(p, "/_synapse/admin/v1/rooms/a%2Fb"));
        // `.` is any byte, as in the regexes the table was written for; `\.` is a dot.
        assert!(m("^/a.b$", "/aXb"));
        assert!(!m("^/a\\.b$", "/aXb"));
        assert!(m("^/a\\.b$", "/a.b"));
        assert!(m(
            "^/_synapse/admin/v1/media/.*$",
            "/_synapse/admin/v1/media/"
        ));
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        assert_eq!(
            Pattern::compile("/x").unwrap_err(),
            PatternError::Unanchored
        );
        for bad in [
            "^/a+", "^/a*", "^/a?", "^/[a-z]+", "^/\\d", "^/a{2}", "^/a|b", "^/(a", "^/a)",
            "^/(|a)", "^/x^",
        ] {
            assert!(Pattern::compile(bad).is_err(), "{bad} compiled");
        }
        let long = format!("^/{}", "a".repeat(MAX_PROGRAM));
        assert_eq!(Pattern::compile(&long).unwrap_err(), PatternError::TooLarge);
        let deep = format!("^{}a{}", "(".repeat(9), ")".repeat(9));
        assert!(matches!(
            Pattern::compile(&deep).unwrap_err(),
            PatternError::TooDeep { .. }
        ));
    }

    #[test]
    fn literal_prefixes_expand_leading_groups() {
        let p = Pattern::compile("^/_matrix/client/(r0|v3)/sync$").unwrap();
        let got: Vec<&[u8]> = p.literal_prefixes().iter().map(|b| &b[..]).collect();
        assert_eq!(
            got,
            [&b"/_matrix/client/r0/sync"[..], b"/_matrix/client/v3/sync"]
        );
        let p = Pattern::compile("^/_matrix/client/(api/v1|unstable/.*)/rooms/.*/x").unwrap();
        let got: Vec<&[u8]> = p.literal_prefixes().iter().map(|b| &b[..]).collect();
        assert_eq!(
            got,
            [
                &b"/_matrix/client/api/v1/rooms/"[..],
                b"/_matrix/client/unstable/"
            ]
        );
        let p = Pattern::compile("^/a(/|$)").unwrap();
        let got: Vec<&[u8]> = p.literal_prefixes().iter().map(|b| &b[..]).collect();
        assert_eq!(got, [&b"/a"[..]], "only the shortest of nested prefixes");
        let p = Pattern::compile("^/x/(a|b(c|d)e|f.*g)h").unwrap();
        let got: Vec<&[u8]> = p.literal_prefixes().iter().map(|b| &b[..]).collect();
        assert_eq!(got, [&b"/x/ah"[..], b"/x/bceh", b"/x/bdeh", b"/x/f"]);
    }

    /// A path built to make a backtracking matcher explode (many `/x/` for several `.*`,
    /// no final match): the DFA answers as the NFA does, and the NFA itself stays within
    /// `len × program` steps. The DFAs stay small.
    #[test]
    fn adversarial_paths_stay_linear() {
        let patterns = [
            "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/context/.*$",
            "^/_matrix/client/(api/v1|r0|v3|unstable/.*)/rooms/.*/aliases",
            "^/a/.*/.*/.*/.*/.*/.*/.*/.*/b$",
            "^/_synapse/admin/v1/room/.*/media.*$",
        ];
        let bodies = [
            "/_matrix/client/unstable/".to_string() + &"rooms/context/".repeat(580),
            "/a/".to_string() + &"/".repeat(8180),
            "/a/".to_string() + &"x/".repeat(4090) + "c",
            "/_synapse/admin/v1/room/".to_string() + &"/room/medi".repeat(815),
        ];
        for p in patterns {
            let compiled = Pattern::compile(p).unwrap();
            for body in &bodies {
                assert!(body.len() <= 8 * 1024 + 64);
                let mut steps = 0;
                let nfa = compiled.nfa_match(body.as_bytes(), &mut steps);
                assert_eq!(compiled.is_match(body.as_bytes()), nfa, "{p}");
                let bound = (body.len() as u64 + 1) * 2 * compiled.program.len() as u64;
                assert!(
                    steps <= bound,
                    "{p}: {steps} steps > {bound} on {} bytes",
                    body.len()
                );
            }
        }
        // And still correct on the long inputs.
        let p = Pattern::compile("^/a/.*/.*/.*/.*/.*/.*/.*/.*/b$").unwrap();
        assert!(!p.is_match(bodies[2].as_bytes()));
        let matching = "/a/".to_string() + &"x/".repeat(4090) + "b";
        assert!(p.is_match(matching.as_bytes()));
    }

    #[test]
    fn dfa_sizes_of_the_table_stay_small() {
        let mut largest = 0;
        for e in super::super::table::ENDPOINTS {
            let p = Pattern::compile(e.pattern).unwrap();
            largest = largest.max(p.dfa.accept_now.len());
        }
        assert!(largest < 128, "largest DFA has {largest} states");
        let explosive = "^/(a|b)*";
        assert!(Pattern::compile(explosive).is_err());
        // `.*x.{n}`-like patterns blow up subset construction; the cap refuses them.
        let blowup = format!("^.*a{}", ".".repeat(12));
        assert_eq!(
            Pattern::compile(&blowup).unwrap_err(),
            PatternError::TooComplex
        );
    }

    #[test]
    fn feeding_in_pieces_equals_feeding_whole() {
        let p = Pattern::compile("^/_matrix/client/(r0|v3)/rooms/.*/messages$").unwrap();
        let path = b"/_matrix/client/v3/rooms/!r:x/messages";
        for cut in 0..=path.len() {
            let got = match p.feed(p.start(), &path[..cut]) {
                Step::Continue(s) => match p.feed(s, &path[cut..]) {
                    Step::Continue(s) => p.finish(s),
                    Step::Matched => true,
                    Step::Failed => false,
                },
                Step::Matched => true,
                Step::Failed => false,
            };
            assert!(got, "cut at {cut}");
        }
        assert_eq!(p.feed(p.start(), b"/_matrix/client/v2/"), Step::Failed);
        let prefix = Pattern::compile("^/_matrix/media/").unwrap();
        assert_eq!(
            prefix.feed(prefix.start(), b"/_matrix/media/x"),
            Step::Matched
        );
    }

    #[test]
    fn pattern_sets_report_the_lowest_eligible_match() {
        let sources = [
            "^/r/.*/send",
            "^/r/.*/state/",
            "^/r/.*/state$",
            "^/r/[^/]+/x(/|$)",
            "^/r/",
            "^/r/a$",
        ];
        let patterns: Vec<Pattern> = sources
            .iter()
            .map(|p| Pattern::compile(p).unwrap())
            .collect();
        // All hang on the prefix `/r/` (the last two already matched or nearly).
        let members: Vec<(&Pattern, &[u8])> = patterns.iter().map(|p| (p, &b"/r/"[..])).collect();
        let set = PatternSet::new(&members).unwrap();
        assert_eq!(set.len(), 6);
        let all = (1u64 << 6) - 1;
        let cases: &[(&str, u64, Option<usize>)] = &[
            ("/r/a/send", all, Some(0)),
            ("/r/a/send", all & !1, Some(4)),
            ("/r/a/state/x", all, Some(1)),
            ("/r/a/state", all, Some(2)),
            ("/r/a/x", all, Some(3)),
            ("/r/a/x", 1 << 5, None),
            ("/r/a", 1 << 5, Some(5)),
            ("/r/a", 0, None),
            ("/r/", all, Some(4)),
        ];
        for &(path, eligible, want) in cases {
            let rest = &path.as_bytes()[3..];
            assert_eq!(set.first_match(rest, eligible), want, "{path} {eligible:b}");
            // Each agrees with the patterns one by one.
            let one_by_one =
                (0..6).find(|&i| eligible & 1 << i != 0 && patterns[i].is_match(path.as_bytes()));
            assert_eq!(want, one_by_one, "{path}");
        }
    }

    /// Cross-check against a naive backtracking matcher over short generated paths.
    #[test]
    fn agrees_with_a_naive_matcher() {
        fn naive(
            nodes: &[Node],
            input: &[u8],
            at: usize,
            k: &mut dyn FnMut(usize) -> bool,
        ) -> bool {
            let Some((first, rest)) = nodes.split_first() else {
                return k(at);
            };
            match first {
                Node::Lit(l) => input[at..].starts_with(l) && naive(rest, input, at + l.len(), k),
                Node::Any => at < input.len() && naive(rest, input, at + 1, k),
                Node::AnyStar => (at..=input.len()).any(|j| naive(rest, input, j, k)),
                Node::NotSlashPlus => {
                    let mut j = at;
                    while j < input.len() && input[j] != b'/' {
                        j += 1;
                        if naive(rest, input, j, k) {
                            return true;
                        }
                    }
                    false
                }
                Node::End => at == input.len() && naive(rest, input, at, k),
                Node::Group { alts, optional } => {
                    (*optional && naive(rest, input, at, k))
                        || alts
                            .iter()
                            .any(|alt| naive(alt, input, at, &mut |j| naive(rest, input, j, k)))
                }
            }
        }
        let patterns = [
            "^/a(/|$)",
            "^/(a|ab)/.*/c$",
            "^/x(/.*/r)?$",
            "^/[^/]+/b",
            "^/(a|b.*)/c.*d$",
            "^/a.b",
        ];
        let alphabet = [b'/', b'a', b'b', b'c', b'd', b'r', b'x'];
        for p in patterns {
            let compiled = Pattern::compile(p).unwrap();
            let nodes = Parser {
                src: p.as_bytes(),
                pos: 1,
            }
            .sequence(0)
            .unwrap();
            // Every string of length ≤ 6 over the alphabet.
            let mut count = 0;
            for len in 0..=6u32 {
                for mut n in 0..alphabet.len().pow(len) {
                    let mut s = Vec::new();
                    for _ in 0..len {
                        s.push(alphabet[n % alphabet.len()]);
                        n /= alphabet.len();
                    }
                    let want = naive(&nodes, &s, 0, &mut |_| true);
                    assert_eq!(compiled.nfa_match(&s, &mut 0), want, "NFA: {p}");
                    assert_eq!(
                        compiled.is_match(&s),
                        want,
                        "{p} on {:?}",
                        String::from_utf8_lossy(&s)
                    );
                    count += 1;
                }
            }
            assert!(count > 100_000);
        }
    }
}
