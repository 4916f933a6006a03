#![allow(clippy::unwrap_used, missing_docs)]
#[path = "../tests/common/der.rs"]
mod der;
use std::time::Instant;
use keychain_index::{KeychainIndex, Query};
use token_core::*;

fn items(t: usize, n: usize) -> Vec<Item> {
    let mut out = Vec::new();
    for j in 0..n / 2 {
        let seed = ((t as u64) << 24) | j as u64;
        let point = der::ec_point(seed);
        let spki = der::spki_p256(&point);
        out.push(Item::Key(KeyItem::new(ObjectId::new([0x5f, 0xc1, 0, (2*j) as u8]), format!("key {j}"), PublicKey { key_type: KeyType::EcP256, raw: point }, KeyUsage::SIGN, Constraint::Pin)));
        let der = der::certificate(&[1, 2, 3], &der::name(&format!("CA {}", t % 16), None), &der::name(&format!("holder {t} {j}"), None), &spki);
        out.push(Item::Certificate(CertificateItem { object_id: ObjectId::new([0x5f, 0xc1, 0, (2*j+1) as u8]), label: format!("holder {t} {j}"), der }));
    }
    out
}

fn main() {
    let tokens: usize = std::env::args().nth(1).map_or(10_000, |s| s.parse().unwrap());
    let what = std::env::args().nth(2).unwrap_or_default();
    let index = KeychainIndex::new();
    let ids: Vec<TokenId> = (0..tokens).map(|t| TokenId::new("piv", &format!("{t:016x}")).unwrap()).collect();
    let t0 = Instant::now();
    let mut batch = Vec::new();
    for t in 0..tokens { batch.push((ids[t].clone(), items(t, 100))); if batch.len() == 1000 { index.insert_tokens(std::mem::take(&mut batch)); } }
    index.insert_tokens(batch);
    eprintln!("built in {:?}", t0.elapsed());
    let pool: Vec<(TokenId, Vec<Item>)> = (0..16).map(|k| (TokenId::new("soft", &format!("new{k}")).unwrap(), items(tokens + k, 100))).collect();
    if what == "write" || what.is_empty() {
        let t0 = Instant::now();
        let n = 2000;
        let mut ins = std::time::Duration::ZERO; let mut rem = std::time::Duration::ZERO;
        for i in 0..n { let (id, it) = pool[i % 16].clone(); let a = Instant::now(); index.insert_token(id.clone(), it); let b = Instant::now(); index.remove_token(&id); rem += b.elapsed(); ins += b - a; }
        eprintln!("insert {:?} remove {:?} per op (total {:?})", ins / n as u32, rem / n as u32, t0.elapsed());
    }
    if what == "read" || what.is_empty() {
        let mut refs = Vec::new();
        let mut x = 0x9E3779B97F4A7C15u64;
        for _ in 0..100_000 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; let t = (x % tokens as u64) as usize; let j = ((x >> 32) % 100) as usize;
            let m = index.query(&Query::new().token(ids[t].clone())); refs.push(m.get(j).unwrap().persistent_ref()); }
        // shuffle
        let mut x = 88172645463325252u64;
        for i in (1..refs.len()).rev() { x ^= x << 13; x ^= x >> 7; x ^= x << 17; refs.swap(i, (x % (i as u64 + 1)) as usize); }
        let mut flat = Vec::new(); let mut ends = Vec::new();
        for r in &refs { flat.extend_from_slice(r); ends.push(flat.len()); }
        let get = |i: usize| &flat[if i == 0 { 0 } else { ends[i-1] }..ends[i]];
        let t0 = Instant::now();
        let mut n = 0;
        for _ in 0..3 { for i in 0..refs.len() { std::hint::black_box(index.resolve(get(i)).unwrap()); n += 1; } }
        eprintln!("resolve {:?}/op over {} refs", t0.elapsed() / n, refs.len());
        let t0 = Instant::now();
        for _ in 0..3 { for i in 0..refs.len() { std::hint::black_box(index.__resolves(get(i))); } }
        eprintln!("resolves (no ItemRef) {:?}/op", t0.elapsed() / n);
        let t0 = Instant::now();
        for _ in 0..3 { for i in 0..refs.len() { std::hint::black_box(index.__decode(get(i))); } }
        eprintln!("decode only {:?}/op", t0.elapsed() / n);
        let qs: Vec<Query> = (0..tokens).map(|t| Query::keys().token(ids[(t * 7919) % tokens].clone())).collect();
        let t0 = Instant::now();
        for q in &qs { std::hint::black_box(index.query(q)); }
        eprintln!("token+class {:?}/op", t0.elapsed() / qs.len() as u32);
        let t0 = Instant::now();
        for q in &qs { std::hint::black_box(index.count(q)); }
        eprintln!("token+class count {:?}/op", t0.elapsed() / qs.len() as u32);
    }
}
