//! The card management key (key reference 9B): a 3DES or AES key, single-block ECB as
//! SP 800-73-4 Part 2 Appendix A.1 uses it for challenge-response.

use core::fmt;

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use token_core::{Error, Result};
use zeroize::Zeroizing;

use crate::types::{AlgorithmId, DEFAULT_MANAGEMENT_KEY};

/// A PIV card management key: its algorithm (3DES, AES-128/192/256) and its bytes, zeroized on
/// drop. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ManagementKey {
    algorithm: AlgorithmId,
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ManagementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManagementKey({}, ***)", self.algorithm)
    }
}

impl ManagementKey {
    /// A key of `algorithm` (03, 08, 0A, 0C) with these bytes (24, 16, 24, 32 bytes).
    ///
    /// # Errors
    /// `BadParameter` for another algorithm or the wrong key length.
    pub fn new(algorithm: AlgorithmId, key: &[u8]) -> Result<Self> {
        let want = match algorithm {
            AlgorithmId::TDES | AlgorithmId::AES192 => 24,
            AlgorithmId::AES128 => 16,
            AlgorithmId::AES256 => 32,
            _ => {
                return Err(Error::bad_parameter(
                    "management keys are 3DES (03) or AES (08, 0A, 0C)",
                ))
            }
        };
        if key.len() != want {
            return Err(Error::bad_parameter(
                "management key of the wrong length for its algorithm",
            ));
        }
        Ok(Self {
            algorithm,
            key: Zeroizing::new(key.to_vec()),
        })
    }

    /// The factory default key with the given algorithm (3DES before YubiKey 5.7, AES-192
    /// from 5.7 on).
    pub fn default_for(algorithm: AlgorithmId) -> Result<Self> {
        Self::new(algorithm, &DEFAULT_MANAGEMENT_KEY)
    }

    /// The factory key bytes as 3DES (for `TDES`) or AES-192 (anything else); infallible.
    #[cfg(feature = "simulator")]
    pub(crate) fn factory(algorithm: AlgorithmId) -> Self {
        let algorithm = if algorithm == AlgorithmId::TDES {
            AlgorithmId::TDES
        } else {
            AlgorithmId::AES192
        };
        Self {
            algorithm,
            key: Zeroizing::new(DEFAULT_MANAGEMENT_KEY.to_vec()),
        }
    }

    /// Parses a key written in hex (`0102...`), as PIV tools take it.
    ///
    /// # Errors
    /// `BadParameter` for bad hex or a wrong length.
    pub fn from_hex(algorithm: AlgorithmId, hex: &str) -> Result<Self> {
        let hex = hex.trim();
        if !hex.len().is_multiple_of(2) {
            return Err(Error::bad_parameter("management key hex of odd length"));
        }
        let bytes: Zeroizing<Vec<u8>> = Zeroizing::new(
            (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| Error::bad_parameter("management key is not hex"))
                })
                .collect::<Result<Vec<u8>>>()?,
        );
        Self::new(algorithm, &bytes)
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> AlgorithmId {
        self.algorithm
    }

    /// The key bytes. Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.key
    }

    /// The cipher's block size: 8 for 3DES, 16 for AES.
    pub fn block_len(&self) -> usize {
        if self.algorithm == AlgorithmId::TDES {
            8
        } else {
            16
        }
    }

    /// Encrypts (or decrypts) one block.
    ///
    /// # Errors
    /// `BadParameter` when `block` is not one block long.
    pub fn crypt_block(&self, block: &[u8], encrypt: bool) -> Result<Zeroizing<Vec<u8>>> {
        if block.len() != self.block_len() {
            return Err(Error::bad_parameter(
                "management key challenge of the wrong size",
            ));
        }
        let mut out = Zeroizing::new(block.to_vec());
        let bad = || Error::bad_parameter("management key");
        match self.algorithm {
            AlgorithmId::TDES => {
                run::<des::TdesEde3>(&self.key, &mut out, encrypt).ok_or_else(bad)?
            }
            AlgorithmId::AES128 => {
                run::<aes::Aes128>(&self.key, &mut out, encrypt).ok_or_else(bad)?
            }
            AlgorithmId::AES192 => {
                run::<aes::Aes192>(&self.key, &mut out, encrypt).ok_or_else(bad)?
            }
            AlgorithmId::AES256 => {
                run::<aes::Aes256>(&self.key, &mut out, encrypt).ok_or_else(bad)?
            }
            _ => return Err(bad()),
        }
        Ok(out)
    }

    /// Encrypts one block.
    ///
    /// # Errors
    /// As [`ManagementKey::crypt_block`].
    pub fn encrypt(&self, block: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.crypt_block(block, true)
    }

    /// Decrypts one block.
    ///
    /// # Errors
    /// As [`ManagementKey::crypt_block`].
    pub fn decrypt(&self, block: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.crypt_block(block, false)
    }
}

fn run<C: KeyInit + BlockCipherEncrypt + BlockCipherDecrypt>(
    key: &[u8],
    block: &mut [u8],
    encrypt: bool,
) -> Option<()> {
    let cipher = C::new_from_slice(key).ok()?;
    let mut b = aes::cipher::Block::<C>::try_from(&*block).ok()?;
    if encrypt {
        cipher.encrypt_block(&mut b);
    } else {
        cipher.decrypt_block(&mut b);
    }
    block.copy_from_slice(&b);
    Some(())
}

/// Constant-time equality of two byte strings of public length.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .flat_map(|w| {
                (0..w.len())
                    .step_by(2)
                    .map(move |i| u8::from_str_radix(&w[i..i + 2], 16).unwrap())
            })
            .collect()
    }

    #[test]
    fn aes_fips197_vectors() {
        // FIPS 197 Appendix C.1-C.3.
        let pt = hex("00112233445566778899aabbccddeeff");
        for (alg, key, ct) in [
            (
                AlgorithmId::AES128,
                "000102030405060708090a0b0c0d0e0f",
                "69c4e0d86a7b0430d8cdb78070b4c55a",
            ),
            (
                AlgorithmId::AES192,
                "000102030405060708090a0b0c0d0e0f1011121314151617",
                "dda97ca4864cdfe06eaf70a0ec0d7191",
            ),
            (
                AlgorithmId::AES256,
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                "8ea2b7ca516745bfeafc49904b496089",
            ),
        ] {
            let k = ManagementKey::new(alg, &hex(key)).unwrap();
            assert_eq!(*k.encrypt(&pt).unwrap(), hex(ct));
            assert_eq!(*k.decrypt(&hex(ct)).unwrap(), pt);
        }
    }

    #[test]
    fn tdes_round_trip_and_single_des_equivalence() {
        // With K1 = K2 = K3, 3DES-EDE is single DES: FIPS 81's classic vector
        // key 0123456789ABCDEF, "Now is t" -> 3FA40E8A984D4815.
        let k = ManagementKey::new(
            AlgorithmId::TDES,
            &hex("0123456789abcdef".repeat(3).as_str()),
        )
        .unwrap();
        let ct = k.encrypt(b"Now is t").unwrap();
        assert_eq!(*ct, hex("3fa40e8a984d4815"));
        assert_eq!(&*k.decrypt(&ct).unwrap(), b"Now is t");
        assert!(k.encrypt(&[0; 16]).is_err());
    }

    #[test]
    fn key_lengths_and_debug() {
        assert!(ManagementKey::new(AlgorithmId::AES128, &[0; 24]).is_err());
        assert!(ManagementKey::new(AlgorithmId::ECC_P256, &[0; 24]).is_err());
        let k = ManagementKey::default_for(AlgorithmId::AES192).unwrap();
        assert_eq!(format!("{k:?}"), "ManagementKey(0A, ***)");
        let h = ManagementKey::from_hex(
            AlgorithmId::TDES,
            "010203040506070801020304050607080102030405060708",
        )
        .unwrap();
        assert_eq!(h.expose(), DEFAULT_MANAGEMENT_KEY);
    }
}
