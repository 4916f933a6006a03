//! AES-CBC with a zero IV and no padding: PSO:ENCIPHER and PSO:DECIPHER with the AES key in
//! DO D5 (OpenPGP card 3.4 §7.2.11, §7.2.12).

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use token_core::StatusWord;
use zeroize::Zeroizing;

type SwResult<T> = core::result::Result<T, StatusWord>;

/// Encrypts (or decrypts) `data`, a whole number of 16-byte blocks, with a 16- or 32-byte key.
pub(crate) fn cbc(key: &[u8], data: &[u8], encrypt: bool) -> SwResult<Zeroizing<Vec<u8>>> {
    if data.is_empty() || !data.len().is_multiple_of(16) {
        return Err(StatusWord::WRONG_LENGTH);
    }
    match key.len() {
        16 => run::<aes::Aes128>(key, data, encrypt),
        32 => run::<aes::Aes256>(key, data, encrypt),
        _ => Err(StatusWord::CONDITIONS_NOT_SATISFIED),
    }
}

fn run<C: KeyInit + BlockCipherEncrypt + BlockCipherDecrypt>(
    key: &[u8],
    data: &[u8],
    encrypt: bool,
) -> SwResult<Zeroizing<Vec<u8>>> {
    let bad = StatusWord::NO_PRECISE_DIAGNOSIS;
    let cipher = C::new_from_slice(key).map_err(|_| bad)?;
    let mut out = Zeroizing::new(Vec::with_capacity(data.len()));
    let mut chain = [0u8; 16];
    for block in data.chunks_exact(16) {
        let mut b = aes::cipher::Block::<C>::try_from(block).map_err(|_| bad)?;
        if encrypt {
            for (x, c) in b.iter_mut().zip(chain) {
                *x ^= c;
            }
            cipher.encrypt_block(&mut b);
            chain.copy_from_slice(&b);
            out.extend_from_slice(&b);
        } else {
            cipher.decrypt_block(&mut b);
            for (x, c) in b.iter_mut().zip(chain) {
                *x ^= c;
            }
            chain.copy_from_slice(block);
            out.extend_from_slice(&b);
        }
    }
    Ok(out)
}
