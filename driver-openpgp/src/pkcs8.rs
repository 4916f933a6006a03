//! Just enough PKCS#8 (RFC 5208, RFC 5915, RFC 8410, RFC 8017) to import EC, Ed25519, X25519
//! and RSA keys.

use token_core::{Error, KeyType, Result, SubjectPublicKeyInfo as Spki, Tag, Tlv};
use zeroize::Zeroizing;

/// A private key taken out of its PKCS#8 wrapping.
pub(crate) struct Parsed {
    pub key_type: KeyType,
    /// The ECC private key (empty for RSA).
    pub private: Zeroizing<Vec<u8>>,
    pub public: Option<Vec<u8>>,
    /// The parts of an RSA key.
    pub rsa: Option<crate::rsa_der::RsaPrivate>,
}

const OCTET_STRING: Tag = Tag::new(0x04);

pub(crate) fn parse(der: &[u8]) -> Result<Parsed> {
    let bad = || Error::corrupted("not a PKCS#8 private key this driver knows");
    let info = Tlv::parse_exact(der)?;
    let mut children = info.children();
    let _version = children.next().ok_or_else(bad)??;
    let algorithm = children.next().ok_or_else(bad)??;
    let private = children.next().ok_or_else(bad)??;
    if private.tag != OCTET_STRING {
        return Err(bad());
    }
    let mut alg = algorithm.children();
    let oid = alg.next().ok_or_else(bad)??.value;
    let params = alg.next().transpose()?.map(|p| p.value);
    if oid == Spki::OID_ED25519 || oid == Spki::OID_X25519 {
        // CurvePrivateKey ::= OCTET STRING (RFC 8410 §7)
        let inner = Tlv::parse_exact(private.value)?;
        if inner.tag != OCTET_STRING || inner.value.len() != 32 {
            return Err(bad());
        }
        let key_type = if oid == Spki::OID_ED25519 {
            KeyType::Ed25519
        } else {
            KeyType::X25519
        };
        return Ok(Parsed {
            key_type,
            private: Zeroizing::new(inner.value.to_vec()),
            public: None,
            rsa: None,
        });
    }
    if oid == Spki::OID_RSA_ENCRYPTION {
        let rsa = crate::rsa_der::parse_private(private.value)
            .ok_or_else(|| Error::corrupted("not an RSA private key (RFC 8017 A.1.2)"))?;
        let bits = u16::try_from(crate::rsa_der::bit_len(&rsa.n))
            .map_err(|_| Error::not_implemented("RSA modulus too long"))?;
        return Ok(Parsed {
            key_type: KeyType::Rsa(bits),
            private: Zeroizing::new(Vec::new()),
            public: None,
            rsa: Some(rsa),
        });
    }
    if oid != Spki::OID_EC_PUBLIC_KEY {
        return Err(Error::not_implemented(
            "only EC, Ed25519, X25519 and RSA keys are imported",
        ));
    }
    let (key_type, len) = match params {
        Some(p) if p == Spki::OID_P256 => (KeyType::EcP256, 32),
        Some(p) if p == Spki::OID_P384 => (KeyType::EcP384, 48),
        _ => return Err(Error::not_implemented("EC curve not supported")),
    };
    // ECPrivateKey ::= SEQUENCE { version, privateKey OCTET STRING, [0] params, [1] publicKey }
    let ec = Tlv::parse_exact(private.value)?;
    let mut ec_children = ec.children();
    let _v = ec_children.next().ok_or_else(bad)??;
    let d = ec_children.next().ok_or_else(bad)??;
    if d.tag != OCTET_STRING || d.value.len() > len || d.value.is_empty() {
        return Err(bad());
    }
    let mut public = None;
    for c in ec_children {
        let c = c?;
        if c.tag == Tag::new(0xA1) {
            // BIT STRING with no unused bits, then the point.
            let bits = Tlv::parse_exact(c.value)?;
            if let Some((&0, point)) = bits.value.split_first() {
                public = Some(point.to_vec());
            }
        }
    }
    let mut private = Zeroizing::new(vec![0u8; len - d.value.len()]);
    private.extend_from_slice(d.value);
    Ok(Parsed {
        key_type,
        private,
        public,
        rsa: None,
    })
}
