//! A persistent (copy-on-write) 16-way trie of postings, keyed by 128 bits.
//!
//! The upper 64 bits of a key are the hash of the value looked up (a key ID, a label, a name);
//! the lower 64 a tie-breaker unique to the posting. Descending by the value hash finds a
//! value's postings; when one value has many (every certificate of a token fleet names the
//! same issuer), they spread over a subtree by their tie-breakers instead of piling into one
//! leaf, so adding one more copies a short path, never the whole list.
//!
//! An update copies the nodes on the paths it touches and shares every other node with the
//! previous version, so a reader holding an old version never sees a change and never waits.

use std::ops::ControlFlow;
use std::sync::Arc;

const FANOUT: usize = 16;
/// A leaf splits into an inner node past this many postings (unless its keys are exhausted).
const LEAF_MAX: usize = 32;
/// 128 bits, 4 per level.
const MAX_DEPTH: u32 = 32;
/// The depth at which the value hash (the upper 64 bits) is used up.
const VALUE_DEPTH: u32 = 16;

/// What a trie stores.
pub(crate) trait Posting: Clone {
    /// `value hash << 64 | tie-breaker`.
    fn key(&self) -> u128;
    /// True when `other` is this very posting (for removal).
    fn same(&self, other: &Self) -> bool;
}

/// Builds a key from a value hash and a tie-breaker.
#[inline]
pub(crate) fn key_of(value_hash: u64, tie: u64) -> u128 {
    (u128::from(value_hash) << 64) | u128::from(tie)
}

#[inline]
fn value_hash(key: u128) -> u64 {
    (key >> 64) as u64
}

#[inline]
fn nibble(key: u128, depth: u32) -> usize {
    ((key >> (124 - 4 * depth)) & 0xF) as usize
}

enum Node<P> {
    /// Postings sorted by key.
    Leaf(Box<[P]>),
    Inner([Option<Arc<Node<P>>>; FANOUT]),
    /// Every posting below has this value hash; the child branches on the tie-breakers
    /// (depth [`VALUE_DEPTH`] on). It stands in for the chain of one-child nodes that the
    /// rest of the value hash would otherwise make, at any depth above [`VALUE_DEPTH`].
    Same(u64, Arc<Node<P>>),
}

/// The trie: a root and a count.
pub(crate) struct Trie<P> {
    root: Option<Arc<Node<P>>>,
    len: usize,
}

impl<P> Clone for Trie<P> {
    fn clone(&self) -> Self {
        Self {
            root: self.root.clone(),
            len: self.len,
        }
    }
}

impl<P> Default for Trie<P> {
    fn default() -> Self {
        Self { root: None, len: 0 }
    }
}

impl<P: Posting> Trie<P> {
    /// The number of postings.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Calls `f` with every posting whose value hash is `value_hash`, until it breaks.
    pub(crate) fn for_each_value<F>(&self, value_hash_: u64, f: &mut F) -> ControlFlow<()>
    where
        F: FnMut(&P) -> ControlFlow<()>,
    {
        let Some(mut node) = self.root.as_ref() else {
            return ControlFlow::Continue(());
        };
        let lo = key_of(value_hash_, 0);
        let mut depth = 0;
        loop {
            match &**node {
                Node::Leaf(postings) => {
                    let start = postings.partition_point(|p| p.key() < lo);
                    for p in postings.iter().skip(start) {
                        if value_hash(p.key()) != value_hash_ {
                            break;
                        }
                        f(p)?;
                    }
                    return ControlFlow::Continue(());
                }
                Node::Same(value, child) => {
                    return if *value == value_hash_ {
                        visit(child, f)
                    } else {
                        ControlFlow::Continue(())
                    };
                }
                Node::Inner(children) => {
                    // Below this depth every posting has the value hash of the path taken.
                    if depth >= VALUE_DEPTH {
                        return visit(node, f);
                    }
                    match &children[nibble(lo, depth)] {
                        Some(child) => {
                            node = child;
                            depth += 1;
                        }
                        None => return ControlFlow::Continue(()),
                    }
                }
            }
        }
    }

    /// Calls `f` with every posting.
    #[cfg(test)]
    pub(crate) fn for_each<F>(&self, f: &mut F) -> ControlFlow<()>
    where
        F: FnMut(&P) -> ControlFlow<()>,
    {
        match &self.root {
            Some(root) => visit(root, f),
            None => ControlFlow::Continue(()),
        }
    }

    /// Adds postings (in one pass: paths shared by several are copied once).
    pub(crate) fn insert(&mut self, mut postings: Vec<P>) {
        if postings.is_empty() {
            return;
        }
        postings.sort_unstable_by_key(P::key);
        self.len += postings.len();
        self.root = Some(match &self.root {
            None => build(postings, 0),
            Some(root) => insert(root, 0, &postings),
        });
    }

    /// Removes these exact postings; those not present are ignored.
    pub(crate) fn remove(&mut self, mut postings: Vec<P>) {
        if postings.is_empty() {
            return;
        }
        postings.sort_unstable_by_key(P::key);
        if let Some(root) = self.root.take() {
            let mut removed = 0;
            self.root = remove(&root, 0, &postings, &mut removed);
            self.len -= removed;
        }
    }

    /// Keeps only the postings for which `keep` is true; returns how many went. Subtrees with
    /// nothing to drop are shared, not copied.
    pub(crate) fn retain(&mut self, keep: &impl Fn(&P) -> bool) -> usize {
        let mut removed = 0;
        if let Some(root) = self.root.take() {
            self.root = retain(&root, keep, &mut removed);
            self.len -= removed;
        }
        removed
    }

    /// Bytes held by this version's nodes (shared nodes counted as if not shared).
    pub(crate) fn bytes(&self) -> usize {
        self.root.as_deref().map_or(0, node_bytes)
    }
}

fn visit<P, F>(node: &Node<P>, f: &mut F) -> ControlFlow<()>
where
    F: FnMut(&P) -> ControlFlow<()>,
{
    match node {
        Node::Leaf(postings) => postings.iter().try_for_each(f),
        Node::Inner(children) => children.iter().flatten().try_for_each(|c| visit(c, f)),
        Node::Same(_, child) => visit(child, f),
    }
}

/// Splits postings sorted by key, all sharing the nibbles above `depth`, into runs with the
/// same nibble at `depth`.
struct Groups<'a, P> {
    rest: &'a [P],
    depth: u32,
}

impl<'a, P: Posting> Iterator for Groups<'a, P> {
    type Item = (usize, &'a [P]);

    fn next(&mut self) -> Option<Self::Item> {
        let n = nibble(self.rest.first()?.key(), self.depth);
        let end = self
            .rest
            .iter()
            .position(|p| nibble(p.key(), self.depth) != n)
            .unwrap_or(self.rest.len());
        let (group, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some((n, group))
    }
}

fn groups<P: Posting>(postings: &[P], depth: u32) -> Groups<'_, P> {
    Groups {
        rest: postings,
        depth,
    }
}

fn build<P: Posting>(postings: Vec<P>, depth: u32) -> Arc<Node<P>> {
    if postings.len() <= LEAF_MAX || depth >= MAX_DEPTH {
        return Arc::new(Node::Leaf(postings.into_boxed_slice()));
    }
    if depth < VALUE_DEPTH {
        if let Some(value) = same_value(&postings) {
            return Arc::new(Node::Same(value, build(postings, VALUE_DEPTH)));
        }
    }
    let mut children: [Option<Arc<Node<P>>>; FANOUT] = Default::default();
    for (n, group) in groups(&postings, depth) {
        children[n] = Some(build(group.to_vec(), depth + 1));
    }
    Arc::new(Node::Inner(children))
}

/// The value hash shared by all of `postings` (sorted), if they share one.
fn same_value<P: Posting>(postings: &[P]) -> Option<u64> {
    let first = value_hash(postings.first()?.key());
    (value_hash(postings.last()?.key()) == first).then_some(first)
}

fn insert<P: Posting>(node: &Arc<Node<P>>, depth: u32, postings: &[P]) -> Arc<Node<P>> {
    match &**node {
        Node::Leaf(old) => build(merge(old, postings), depth),
        Node::Same(value, child) => {
            if same_value(postings) == Some(*value) {
                return Arc::new(Node::Same(*value, insert(child, VALUE_DEPTH, postings)));
            }
            // Other values arrive: branch here, the shared value going one level down.
            let mut children: [Option<Arc<Node<P>>>; FANOUT] = Default::default();
            children[nibble(key_of(*value, 0), depth)] = Some(node.clone());
            insert(&Arc::new(Node::Inner(children)), depth, postings)
        }
        Node::Inner(children) => {
            let mut next = children.clone();
            for (n, group) in groups(postings, depth) {
                next[n] = Some(match &children[n] {
                    Some(child) => insert(child, depth + 1, group),
                    None => build(group.to_vec(), depth + 1),
                });
            }
            Arc::new(Node::Inner(next))
        }
    }
}

fn merge<P: Posting>(a: &[P], b: &[P]) -> Vec<P> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if y.key() < x.key() => b.next(),
            (Some(_), _) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(p) => out.push(p.clone()),
            None => return out,
        }
    }
}

fn contains<P: Posting>(sorted: &[P], p: &P) -> bool {
    let k = p.key();
    let start = sorted.partition_point(|q| q.key() < k);
    sorted
        .iter()
        .skip(start)
        .take_while(|q| q.key() == k)
        .any(|q| q.same(p))
}

fn remove<P: Posting>(
    node: &Arc<Node<P>>,
    depth: u32,
    postings: &[P],
    removed: &mut usize,
) -> Option<Arc<Node<P>>> {
    match &**node {
        Node::Leaf(old) => {
            let kept: Vec<P> = old
                .iter()
                .filter(|p| !contains(postings, p))
                .cloned()
                .collect();
            if kept.len() == old.len() {
                return Some(node.clone());
            }
            *removed += old.len() - kept.len();
            (!kept.is_empty()).then(|| Arc::new(Node::Leaf(kept.into_boxed_slice())))
        }
        Node::Same(value, child) => {
            let start = postings.partition_point(|p| value_hash(p.key()) < *value);
            let mine: Vec<P> = postings
                .iter()
                .skip(start)
                .take_while(|p| value_hash(p.key()) == *value)
                .cloned()
                .collect();
            if mine.is_empty() {
                return Some(node.clone());
            }
            let after = remove(child, VALUE_DEPTH, &mine, removed)?;
            Some(if Arc::ptr_eq(&after, child) {
                node.clone()
            } else {
                Arc::new(Node::Same(*value, after))
            })
        }
        Node::Inner(children) => {
            let mut next = children.clone();
            let mut changed = false;
            for (n, group) in groups(postings, depth) {
                if let Some(child) = &children[n] {
                    let after = remove(child, depth + 1, group, removed);
                    if !same_node(after.as_ref(), child) {
                        next[n] = after;
                        changed = true;
                    }
                }
            }
            shrink(node, next, changed)
        }
    }
}

fn retain<P: Posting>(
    node: &Arc<Node<P>>,
    keep: &impl Fn(&P) -> bool,
    removed: &mut usize,
) -> Option<Arc<Node<P>>> {
    match &**node {
        Node::Leaf(old) => {
            if old.iter().all(keep) {
                return Some(node.clone());
            }
            let kept: Vec<P> = old.iter().filter(|p| keep(p)).cloned().collect();
            *removed += old.len() - kept.len();
            (!kept.is_empty()).then(|| Arc::new(Node::Leaf(kept.into_boxed_slice())))
        }
        Node::Same(value, child) => {
            let after = retain(child, keep, removed)?;
            Some(if Arc::ptr_eq(&after, child) {
                node.clone()
            } else {
                Arc::new(Node::Same(*value, after))
            })
        }
        Node::Inner(children) => {
            let mut next = children.clone();
            let mut changed = false;
            for (slot, child) in next.iter_mut().zip(children.iter()) {
                if let Some(child) = child {
                    let after = retain(child, keep, removed);
                    if !same_node(after.as_ref(), child) {
                        *slot = after;
                        changed = true;
                    }
                }
            }
            shrink(node, next, changed)
        }
    }
}

fn same_node<P>(a: Option<&Arc<Node<P>>>, b: &Arc<Node<P>>) -> bool {
    a.is_some_and(|a| Arc::ptr_eq(a, b))
}

/// The inner node after its children changed: itself if none did, nothing if all are gone.
fn shrink<P>(
    node: &Arc<Node<P>>,
    children: [Option<Arc<Node<P>>>; FANOUT],
    changed: bool,
) -> Option<Arc<Node<P>>> {
    if !changed {
        Some(node.clone())
    } else if children.iter().all(Option::is_none) {
        None
    } else {
        Some(Arc::new(Node::Inner(children)))
    }
}

fn node_bytes<P>(node: &Node<P>) -> usize {
    // An Arc's allocation: two counters and the node.
    let own = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Node<P>>();
    match node {
        Node::Leaf(postings) => own + std::mem::size_of_val(&**postings),
        Node::Inner(children) => {
            own + children
                .iter()
                .flatten()
                .map(|c| node_bytes(c))
                .sum::<usize>()
        }
        Node::Same(_, child) => own + node_bytes(child),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::fmix64;

    #[derive(Clone, Debug, PartialEq)]
    struct P {
        value: u64,
        id: u64,
    }

    impl Posting for P {
        fn key(&self) -> u128 {
            key_of(self.value, fmix64(self.id))
        }
        fn same(&self, other: &Self) -> bool {
            self == other
        }
    }

    fn values(t: &Trie<P>, v: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let _ = t.for_each_value(v, &mut |p: &P| {
            out.push(p.id);
            ControlFlow::Continue(())
        });
        out.sort_unstable();
        out
    }

    #[test]
    fn many_values_and_one_very_common_value() {
        let mut t = Trie::default();
        // 5,000 distinct values with one posting each, and one value with 3,000 postings.
        let mut batch: Vec<P> = (0..5_000)
            .map(|i| P {
                value: fmix64(i),
                id: i,
            })
            .collect();
        batch.extend((0..3_000).map(|i| P {
            value: 7,
            id: 10_000 + i,
        }));
        t.insert(batch);
        assert_eq!(t.len(), 8_000);
        assert_eq!(values(&t, fmix64(42)), vec![42]);
        assert_eq!(values(&t, 7).len(), 3_000);
        assert!(values(&t, 8).is_empty());

        // An older version is untouched by later changes.
        let before = t.clone();
        t.insert(vec![P {
            value: 7,
            id: 99_999,
        }]);
        t.remove(vec![
            P {
                value: fmix64(42),
                id: 42,
            },
            P {
                value: 7,
                id: 10_000,
            },
        ]);
        assert_eq!(values(&t, 7).len(), 3_000);
        assert!(values(&t, fmix64(42)).is_empty());
        assert_eq!(values(&before, fmix64(42)), vec![42]);
        assert_eq!(values(&before, 7).len(), 3_000);
        assert_eq!(t.len(), 7_999);

        // Retain drops what it is told and shares the rest.
        let gone = t.retain(&|p: &P| p.value != 7);
        assert_eq!(gone, 3_000);
        assert_eq!(t.len(), 4_999);
        assert!(values(&t, 7).is_empty());
        let mut n = 0;
        let _ = t.for_each(&mut |_| {
            n += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(n, 4_999);
        assert!(t.bytes() > 4_999 * std::mem::size_of::<P>());
    }

    #[test]
    fn stopping_early() {
        let mut t = Trie::default();
        t.insert((0..100).map(|i| P { value: 1, id: i }).collect());
        let mut seen = 0;
        let flow = t.for_each_value(1, &mut |_| {
            seen += 1;
            if seen == 10 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(flow, ControlFlow::Break(()));
        assert_eq!(seen, 10);
    }

    #[test]
    fn removing_everything_empties_the_trie() {
        let mut t = Trie::default();
        let all: Vec<P> = (0..500)
            .map(|i| P {
                value: i % 7,
                id: i,
            })
            .collect();
        t.insert(all.clone());
        t.remove(all);
        assert_eq!(t.len(), 0);
        assert!(t.root.is_none());
    }
}
