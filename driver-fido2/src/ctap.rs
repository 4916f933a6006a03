//! CTAP 2.1's numbers: command bytes, status codes, subcommands, permissions, and the
//! parameter keys both sides use. Names follow the specification (§6, §8, §6.5.5.7).

use std::fmt;

/// authenticatorMakeCredential.
pub const CMD_MAKE_CREDENTIAL: u8 = 0x01;
/// authenticatorGetAssertion.
pub const CMD_GET_ASSERTION: u8 = 0x02;
/// authenticatorGetInfo.
pub const CMD_GET_INFO: u8 = 0x04;
/// authenticatorClientPIN.
pub const CMD_CLIENT_PIN: u8 = 0x06;
/// authenticatorReset.
pub const CMD_RESET: u8 = 0x07;
/// authenticatorGetNextAssertion.
pub const CMD_GET_NEXT_ASSERTION: u8 = 0x08;
/// authenticatorBioEnrollment.
pub const CMD_BIO_ENROLLMENT: u8 = 0x09;
/// authenticatorCredentialManagement.
pub const CMD_CREDENTIAL_MANAGEMENT: u8 = 0x0A;
/// authenticatorSelection.
pub const CMD_SELECTION: u8 = 0x0B;
/// authenticatorLargeBlobs.
pub const CMD_LARGE_BLOBS: u8 = 0x0C;
/// authenticatorConfig.
pub const CMD_CONFIG: u8 = 0x0D;
/// The pre-release credentialManagement command of CTAP 2.1-PRE devices.
pub const CMD_CREDENTIAL_MANAGEMENT_PRE: u8 = 0x41;

/// clientPIN subcommands (§6.5.5).
pub mod client_pin {
    /// getPINRetries.
    pub const GET_PIN_RETRIES: u8 = 0x01;
    /// getKeyAgreement.
    pub const GET_KEY_AGREEMENT: u8 = 0x02;
    /// setPIN.
    pub const SET_PIN: u8 = 0x03;
    /// changePIN.
    pub const CHANGE_PIN: u8 = 0x04;
    /// getPinToken (CTAP 2.0's token, no permissions).
    pub const GET_PIN_TOKEN: u8 = 0x05;
    /// getPinUvAuthTokenUsingUvWithPermissions.
    pub const GET_UV_TOKEN_WITH_PERMISSIONS: u8 = 0x06;
    /// getUVRetries.
    pub const GET_UV_RETRIES: u8 = 0x07;
    /// getPinUvAuthTokenUsingPinWithPermissions.
    pub const GET_PIN_TOKEN_WITH_PERMISSIONS: u8 = 0x09;

    /// Request keys.
    pub mod req {
        /// pinUvAuthProtocol.
        pub const PROTOCOL: i64 = 0x01;
        /// subCommand.
        pub const SUB_COMMAND: i64 = 0x02;
        /// keyAgreement (COSE key).
        pub const KEY_AGREEMENT: i64 = 0x03;
        /// pinUvAuthParam.
        pub const PIN_UV_AUTH_PARAM: i64 = 0x04;
        /// newPinEnc.
        pub const NEW_PIN_ENC: i64 = 0x05;
        /// pinHashEnc.
        pub const PIN_HASH_ENC: i64 = 0x06;
        /// permissions.
        pub const PERMISSIONS: i64 = 0x09;
        /// rpId (permissions RP ID).
        pub const RP_ID: i64 = 0x0A;
    }

    /// Response keys.
    pub mod resp {
        /// keyAgreement.
        pub const KEY_AGREEMENT: i64 = 0x01;
        /// pinUvAuthToken (encrypted).
        pub const PIN_UV_AUTH_TOKEN: i64 = 0x02;
        /// pinRetries.
        pub const PIN_RETRIES: i64 = 0x03;
        /// powerCycleState.
        pub const POWER_CYCLE_STATE: i64 = 0x04;
        /// uvRetries.
        pub const UV_RETRIES: i64 = 0x05;
    }
}

/// credentialManagement subcommands (§6.8).
pub mod cred_mgmt {
    /// getCredsMetadata.
    pub const GET_CREDS_METADATA: u8 = 0x01;
    /// enumerateRPsBegin.
    pub const ENUMERATE_RPS_BEGIN: u8 = 0x02;
    /// enumerateRPsGetNextRP.
    pub const ENUMERATE_RPS_NEXT: u8 = 0x03;
    /// enumerateCredentialsBegin.
    pub const ENUMERATE_CREDENTIALS_BEGIN: u8 = 0x04;
    /// enumerateCredentialsGetNextCredential.
    pub const ENUMERATE_CREDENTIALS_NEXT: u8 = 0x05;
    /// deleteCredential.
    pub const DELETE_CREDENTIAL: u8 = 0x06;
    /// updateUserInformation.
    pub const UPDATE_USER_INFORMATION: u8 = 0x07;
}

/// authenticatorConfig subcommands (§6.11).
pub mod config {
    /// enableEnterpriseAttestation.
    pub const ENABLE_ENTERPRISE_ATTESTATION: u8 = 0x01;
    /// toggleAlwaysUv.
    pub const TOGGLE_ALWAYS_UV: u8 = 0x02;
    /// setMinPINLength.
    pub const SET_MIN_PIN_LENGTH: u8 = 0x03;
    /// vendorPrototype.
    pub const VENDOR_PROTOTYPE: u8 = 0xFF;
}

/// getInfo response keys (§6.4).
pub mod info {
    /// versions.
    pub const VERSIONS: i64 = 0x01;
    /// extensions.
    pub const EXTENSIONS: i64 = 0x02;
    /// aaguid.
    pub const AAGUID: i64 = 0x03;
    /// options.
    pub const OPTIONS: i64 = 0x04;
    /// maxMsgSize.
    pub const MAX_MSG_SIZE: i64 = 0x05;
    /// pinUvAuthProtocols.
    pub const PIN_UV_AUTH_PROTOCOLS: i64 = 0x06;
    /// maxCredentialCountInList.
    pub const MAX_CREDENTIAL_COUNT_IN_LIST: i64 = 0x07;
    /// maxCredentialIdLength.
    pub const MAX_CREDENTIAL_ID_LENGTH: i64 = 0x08;
    /// transports.
    pub const TRANSPORTS: i64 = 0x09;
    /// algorithms.
    pub const ALGORITHMS: i64 = 0x0A;
    /// maxSerializedLargeBlobArray.
    pub const MAX_SERIALIZED_LARGE_BLOB_ARRAY: i64 = 0x0B;
    /// forcePINChange.
    pub const FORCE_PIN_CHANGE: i64 = 0x0C;
    /// minPINLength.
    pub const MIN_PIN_LENGTH: i64 = 0x0D;
    /// firmwareVersion.
    pub const FIRMWARE_VERSION: i64 = 0x0E;
    /// maxCredBlobLength.
    pub const MAX_CRED_BLOB_LENGTH: i64 = 0x0F;
    /// maxRPIDsForSetMinPINLength.
    pub const MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH: i64 = 0x10;
    /// preferredPlatformUvAttempts.
    pub const PREFERRED_PLATFORM_UV_ATTEMPTS: i64 = 0x11;
    /// uvModality.
    pub const UV_MODALITY: i64 = 0x12;
    /// certifications.
    pub const CERTIFICATIONS: i64 = 0x13;
    /// remainingDiscoverableCredentials.
    pub const REMAINING_DISCOVERABLE_CREDENTIALS: i64 = 0x14;
}

/// pinUvAuthToken permissions (§6.5.5.7), a bit set.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Permissions(pub u8);

impl Permissions {
    /// No permissions.
    pub const NONE: Self = Self(0);
    /// mc: makeCredential (needs an RP ID).
    pub const MAKE_CREDENTIAL: Self = Self(0x01);
    /// ga: getAssertion (needs an RP ID).
    pub const GET_ASSERTION: Self = Self(0x02);
    /// cm: credentialManagement (RP ID optional; metadata and RP enumeration need none).
    pub const CREDENTIAL_MANAGEMENT: Self = Self(0x04);
    /// be: bioEnrollment.
    pub const BIO_ENROLLMENT: Self = Self(0x08);
    /// lbw: largeBlobWrite (the one permission that survives user presence).
    pub const LARGE_BLOB_WRITE: Self = Self(0x10);
    /// acfg: authenticatorConfig.
    pub const AUTHENTICATOR_CONFIG: Self = Self(0x20);

    /// Both sets.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Every bit of `other` is set here.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// No bit set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for Permissions {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u8, &str); 6] = [
            (0x01, "mc"),
            (0x02, "ga"),
            (0x04, "cm"),
            (0x08, "be"),
            (0x10, "lbw"),
            (0x20, "acfg"),
        ];
        let names: Vec<&str> = NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, n)| *n)
            .collect();
        if names.is_empty() {
            f.write_str("Permissions(none)")
        } else {
            write!(f, "Permissions({})", names.join("|"))
        }
    }
}

/// A CTAP2 status code (the first byte of every CBOR answer).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u8);

impl Status {
    /// CTAP2_OK.
    pub const OK: Self = Self(0x00);
    /// CTAP1_ERR_INVALID_COMMAND.
    pub const INVALID_COMMAND: Self = Self(0x01);
    /// CTAP1_ERR_INVALID_PARAMETER.
    pub const INVALID_PARAMETER: Self = Self(0x02);
    /// CTAP1_ERR_INVALID_LENGTH.
    pub const INVALID_LENGTH: Self = Self(0x03);
    /// CTAP1_ERR_INVALID_SEQ.
    pub const INVALID_SEQ: Self = Self(0x04);
    /// CTAP1_ERR_TIMEOUT.
    pub const TIMEOUT: Self = Self(0x05);
    /// CTAP1_ERR_CHANNEL_BUSY.
    pub const CHANNEL_BUSY: Self = Self(0x06);
    /// CTAP2_ERR_CBOR_UNEXPECTED_TYPE.
    pub const CBOR_UNEXPECTED_TYPE: Self = Self(0x11);
    /// CTAP2_ERR_INVALID_CBOR.
    pub const INVALID_CBOR: Self = Self(0x12);
    /// CTAP2_ERR_MISSING_PARAMETER.
    pub const MISSING_PARAMETER: Self = Self(0x14);
    /// CTAP2_ERR_LIMIT_EXCEEDED.
    pub const LIMIT_EXCEEDED: Self = Self(0x15);
    /// CTAP2_ERR_FP_DATABASE_FULL.
    pub const FP_DATABASE_FULL: Self = Self(0x17);
    /// CTAP2_ERR_LARGE_BLOB_STORAGE_FULL.
    pub const LARGE_BLOB_STORAGE_FULL: Self = Self(0x18);
    /// CTAP2_ERR_CREDENTIAL_EXCLUDED.
    pub const CREDENTIAL_EXCLUDED: Self = Self(0x19);
    /// CTAP2_ERR_PROCESSING.
    pub const PROCESSING: Self = Self(0x21);
    /// CTAP2_ERR_INVALID_CREDENTIAL.
    pub const INVALID_CREDENTIAL: Self = Self(0x22);
    /// CTAP2_ERR_USER_ACTION_PENDING.
    pub const USER_ACTION_PENDING: Self = Self(0x23);
    /// CTAP2_ERR_OPERATION_PENDING.
    pub const OPERATION_PENDING: Self = Self(0x24);
    /// CTAP2_ERR_NO_OPERATIONS.
    pub const NO_OPERATIONS: Self = Self(0x25);
    /// CTAP2_ERR_UNSUPPORTED_ALGORITHM.
    pub const UNSUPPORTED_ALGORITHM: Self = Self(0x26);
    /// CTAP2_ERR_OPERATION_DENIED.
    pub const OPERATION_DENIED: Self = Self(0x27);
    /// CTAP2_ERR_KEY_STORE_FULL.
    pub const KEY_STORE_FULL: Self = Self(0x28);
    /// CTAP2_ERR_UNSUPPORTED_OPTION.
    pub const UNSUPPORTED_OPTION: Self = Self(0x2B);
    /// CTAP2_ERR_INVALID_OPTION.
    pub const INVALID_OPTION: Self = Self(0x2C);
    /// CTAP2_ERR_KEEPALIVE_CANCEL.
    pub const KEEPALIVE_CANCEL: Self = Self(0x2D);
    /// CTAP2_ERR_NO_CREDENTIALS.
    pub const NO_CREDENTIALS: Self = Self(0x2E);
    /// CTAP2_ERR_USER_ACTION_TIMEOUT.
    pub const USER_ACTION_TIMEOUT: Self = Self(0x2F);
    /// CTAP2_ERR_NOT_ALLOWED.
    pub const NOT_ALLOWED: Self = Self(0x30);
    /// CTAP2_ERR_PIN_INVALID.
    pub const PIN_INVALID: Self = Self(0x31);
    /// CTAP2_ERR_PIN_BLOCKED.
    pub const PIN_BLOCKED: Self = Self(0x32);
    /// CTAP2_ERR_PIN_AUTH_INVALID: the trigger for getting a new AuthToken.
    pub const PIN_AUTH_INVALID: Self = Self(0x33);
    /// CTAP2_ERR_PIN_AUTH_BLOCKED: three wrong PINs in a row; power-cycle the device.
    pub const PIN_AUTH_BLOCKED: Self = Self(0x34);
    /// CTAP2_ERR_PIN_NOT_SET.
    pub const PIN_NOT_SET: Self = Self(0x35);
    /// CTAP2_ERR_PUAT_REQUIRED (2.0: PIN_REQUIRED).
    pub const PUAT_REQUIRED: Self = Self(0x36);
    /// CTAP2_ERR_PIN_POLICY_VIOLATION.
    pub const PIN_POLICY_VIOLATION: Self = Self(0x37);
    /// CTAP2_ERR_REQUEST_TOO_LARGE.
    pub const REQUEST_TOO_LARGE: Self = Self(0x39);
    /// CTAP2_ERR_ACTION_TIMEOUT.
    pub const ACTION_TIMEOUT: Self = Self(0x3A);
    /// CTAP2_ERR_UP_REQUIRED.
    pub const UP_REQUIRED: Self = Self(0x3B);
    /// CTAP2_ERR_UV_BLOCKED.
    pub const UV_BLOCKED: Self = Self(0x3C);
    /// CTAP2_ERR_INTEGRITY_FAILURE.
    pub const INTEGRITY_FAILURE: Self = Self(0x3D);
    /// CTAP2_ERR_INVALID_SUBCOMMAND.
    pub const INVALID_SUBCOMMAND: Self = Self(0x3E);
    /// CTAP2_ERR_UV_INVALID.
    pub const UV_INVALID: Self = Self(0x3F);
    /// CTAP2_ERR_UNAUTHORIZED_PERMISSION.
    pub const UNAUTHORIZED_PERMISSION: Self = Self(0x40);
    /// CTAP1_ERR_OTHER.
    pub const OTHER: Self = Self(0x7F);

    /// The specification's name, or `None` for a code it does not define.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "CTAP2_OK",
            0x01 => "CTAP1_ERR_INVALID_COMMAND",
            0x02 => "CTAP1_ERR_INVALID_PARAMETER",
            0x03 => "CTAP1_ERR_INVALID_LENGTH",
            0x04 => "CTAP1_ERR_INVALID_SEQ",
            0x05 => "CTAP1_ERR_TIMEOUT",
            0x06 => "CTAP1_ERR_CHANNEL_BUSY",
            0x0A => "CTAP1_ERR_LOCK_REQUIRED",
            0x0B => "CTAP1_ERR_INVALID_CHANNEL",
            0x11 => "CTAP2_ERR_CBOR_UNEXPECTED_TYPE",
            0x12 => "CTAP2_ERR_INVALID_CBOR",
            0x14 => "CTAP2_ERR_MISSING_PARAMETER",
            0x15 => "CTAP2_ERR_LIMIT_EXCEEDED",
            0x17 => "CTAP2_ERR_FP_DATABASE_FULL",
            0x18 => "CTAP2_ERR_LARGE_BLOB_STORAGE_FULL",
            0x19 => "CTAP2_ERR_CREDENTIAL_EXCLUDED",
            0x21 => "CTAP2_ERR_PROCESSING",
            0x22 => "CTAP2_ERR_INVALID_CREDENTIAL",
            0x23 => "CTAP2_ERR_USER_ACTION_PENDING",
            0x24 => "CTAP2_ERR_OPERATION_PENDING",
            0x25 => "CTAP2_ERR_NO_OPERATIONS",
            0x26 => "CTAP2_ERR_UNSUPPORTED_ALGORITHM",
            0x27 => "CTAP2_ERR_OPERATION_DENIED",
            0x28 => "CTAP2_ERR_KEY_STORE_FULL",
            0x2B => "CTAP2_ERR_UNSUPPORTED_OPTION",
            0x2C => "CTAP2_ERR_INVALID_OPTION",
            0x2D => "CTAP2_ERR_KEEPALIVE_CANCEL",
            0x2E => "CTAP2_ERR_NO_CREDENTIALS",
            0x2F => "CTAP2_ERR_USER_ACTION_TIMEOUT",
            0x30 => "CTAP2_ERR_NOT_ALLOWED",
            0x31 => "CTAP2_ERR_PIN_INVALID",
            0x32 => "CTAP2_ERR_PIN_BLOCKED",
            0x33 => "CTAP2_ERR_PIN_AUTH_INVALID",
            0x34 => "CTAP2_ERR_PIN_AUTH_BLOCKED",
            0x35 => "CTAP2_ERR_PIN_NOT_SET",
            0x36 => "CTAP2_ERR_PUAT_REQUIRED",
            0x37 => "CTAP2_ERR_PIN_POLICY_VIOLATION",
            0x38 => "CTAP2_ERR_PIN_TOKEN_EXPIRED (CTAP 2.0)",
            0x39 => "CTAP2_ERR_REQUEST_TOO_LARGE",
            0x3A => "CTAP2_ERR_ACTION_TIMEOUT",
            0x3B => "CTAP2_ERR_UP_REQUIRED",
            0x3C => "CTAP2_ERR_UV_BLOCKED",
            0x3D => "CTAP2_ERR_INTEGRITY_FAILURE",
            0x3E => "CTAP2_ERR_INVALID_SUBCOMMAND",
            0x3F => "CTAP2_ERR_UV_INVALID",
            0x40 => "CTAP2_ERR_UNAUTHORIZED_PERMISSION",
            0x7F => "CTAP1_ERR_OTHER",
            0xDF => "CTAP2_ERR_SPEC_LAST",
            0xE0..=0xEF => "CTAP2_ERR_EXTENSION",
            0xF0..=0xFF => "CTAP2_ERR_VENDOR",
            _ => return None,
        })
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:02X})", self.0),
            None => write!(f, "unknown CTAP status 0x{:02X}", self.0),
        }
    }
}

/// The FIDO applet's AID, for SELECT over NFC and CCID (CTAP 2.1 §11.3).
pub const FIDO_AID: [u8; 8] = [0xA0, 0x00, 0x00, 0x06, 0x47, 0x2F, 0x00, 0x01];
/// NFCCTAP_MSG: CLA 80, INS 10, the CTAP2 command byte then CBOR as data.
pub const INS_NFCCTAP_MSG: u8 = 0x10;
/// NFCCTAP_GETRESPONSE: INS 11, polled while the authenticator answers 9100 (processing).
pub const INS_NFCCTAP_GETRESPONSE: u8 = 0x11;
