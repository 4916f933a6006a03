"""Yubico's python-fido2 against tokenkit's FIDO2 simulator in pcscd (tokenctl sim fido2).

Run by tokenctl/tests/fido2_stack.rs with the venv that `cargo xtask stack` makes:
    python fido2_stack.py READER PIN                  # a fresh simulator
    python fido2_stack.py READER PIN after-restart    # the same one, restarted
    python fido2_stack.py READER PIN info             # getInfo only
It prints one line per step (the Rust test asserts on them) and `ALL OK` at the end; any
failure raises, so the exit status is non-zero.

The card is reached the way python-fido2 reaches an NFC security key: CtapPcscDevice
(SELECT of the FIDO AID, NFCCTAP_MSG with chaining and GET RESPONSE). The relying party's
checks are python-fido2's own Fido2Server: packed self attestation, RP ID hash, UP/UV
flags, and the assertion signatures.
"""

import hashlib
import sys
import time

from fido2.attestation import AttestationType, PackedAttestation
from fido2.client import (
    ClientError,
    DefaultClientDataCollector,
    Fido2Client,
    UserInteraction,
)
from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin, Ctap2, CredentialManagement
from fido2.pcsc import CtapPcscDevice
from fido2.server import Fido2Server
from fido2.utils import websafe_decode
from fido2.webauthn import PublicKeyCredentialDescriptor, PublicKeyCredentialUserEntity

RP_ID = "example.com"
ORIGIN = "https://example.com"


def step(*words):
    print(*words, flush=True)


def find_device(reader):
    deadline = time.time() + 20
    while True:
        devices = list(CtapPcscDevice.list_devices(reader))
        if devices:
            return devices[0]
        if time.time() > deadline:
            raise SystemExit(f"no FIDO device in reader {reader!r}")
        time.sleep(0.2)


class PinEntry(UserInteraction):
    def __init__(self, pin):
        self.pin = pin
        self.asked = []

    def prompt_up(self):
        step("prompt_up")

    def request_pin(self, permissions, rp_id):
        self.asked.append((int(permissions), rp_id))
        return self.pin

    def request_uv(self, permissions, rp_id):
        return True


def ext_get(obj, *path):
    """A value inside client extension outputs, whether mappings or objects."""
    for key in path:
        if obj is None:
            return None
        obj = obj.get(key) if hasattr(obj, "get") else getattr(obj, key, None)
    return obj


def verify_packed_self(attestation_object, client_data_hash):
    assert attestation_object.fmt == "packed", attestation_object.fmt
    result = PackedAttestation().verify(
        attestation_object.att_stmt, attestation_object.auth_data, client_data_hash
    )
    assert result.attestation_type == AttestationType.SELF, result
    step("attestation", attestation_object.fmt, result.attestation_type.name)


def after_restart(ctap2, pin):
    """The simulator restarted from its state file: the PIN and alice are still there."""
    step("clientPin", ctap2.info.options.get("clientPin"))
    client_pin = ClientPin(ctap2)
    token = client_pin.get_pin_token(pin, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    step("pin_retries", client_pin.get_pin_retries()[0])
    cm = CredentialManagement(ctap2, client_pin.protocol, token)
    creds = cm.enumerate_creds(hashlib.sha256(RP_ID.encode()).digest())
    step(
        "creds",
        ",".join(sorted(c[CredentialManagement.RESULT.USER]["name"] for c in creds)),
    )
    step("ALL OK")


def main():
    reader, pin = sys.argv[1], sys.argv[2]
    device = find_device(reader)
    step("device", device)
    ctap2 = Ctap2(device)
    if sys.argv[3:] == ["after-restart"]:
        return after_restart(ctap2, pin)
    if sys.argv[3:] == ["info"]:
        step("versions", ",".join(ctap2.info.versions))
        step("atr", device.get_atr().hex())
        step("ALL OK")
        return

    info = ctap2.info
    step("versions", ",".join(info.versions))
    step("aaguid", bytes(info.aaguid).hex())
    step("pin_protocols", ",".join(str(p) for p in info.pin_uv_protocols))
    step("transports", ",".join(info.transports))
    step("clientPin", info.options.get("clientPin"))
    for option in ("credMgmt", "largeBlobs", "pinUvAuthToken", "authnrCfg"):
        step("option", option, info.options.get(option))
    assert info.options.get("clientPin") is False

    client_pin = ClientPin(ctap2)
    step("protocol", client_pin.protocol.VERSION)
    client_pin.set_pin(pin)
    info = ctap2.get_info()
    step("clientPin", info.options.get("clientPin"))
    step("pin_retries", client_pin.get_pin_retries()[0])
    try:
        client_pin.get_pin_token(
            "0" * len(pin), ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID
        )
        raise AssertionError("a wrong PIN was accepted")
    except CtapError as e:
        step("wrong_pin", e.code.name, client_pin.get_pin_retries()[0])

    # Registration through the WebAuthn client, the PIN asked through UserInteraction.
    entry = PinEntry(pin)
    client = Fido2Client(device, DefaultClientDataCollector(ORIGIN), entry)
    server = Fido2Server(
        {"id": RP_ID, "name": "Example RP"},
        attestation="direct",
        verify_attestation=verify_packed_self,
    )
    credentials = {}
    for name in ("alice", "bob"):
        user = PublicKeyCredentialUserEntity(
            id=name.encode() * 4, name=name, display_name=name.title()
        )
        options, state = server.register_begin(
            user,
            resident_key_requirement="required",
            user_verification="required",
            extensions={"prf": {}, "largeBlob": {"support": "required"}},
        )
        result = client.make_credential(options.public_key)
        auth_data = server.register_complete(state, result)
        outputs = result.client_extension_results
        step("prf_enabled", name, ext_get(outputs, "prf", "enabled"))
        step("large_blob_supported", name, ext_get(outputs, "largeBlob", "supported"))
        cred = auth_data.credential_data
        credentials[name] = cred
        step(
            "registered",
            name,
            len(cred.credential_id),
            "UP" if auth_data.is_user_present() else "-",
            "UV" if auth_data.is_user_verified() else "-",
            auth_data.counter,
        )
    step("pin_requests", ";".join(f"{p}:{r}" for p, r in entry.asked))

    # Alice again, with her credential in the exclude list: the authenticator refuses.
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"alice" * 4, name="alice"),
        [credentials["alice"]],
        resident_key_requirement="required",
        user_verification="required",
    )
    try:
        client.make_credential(options.public_key)
        raise AssertionError("an excluded credential was made again")
    except ClientError as e:
        cause = e.cause.code.name if isinstance(e.cause, CtapError) else e.cause
        step("excluded", e.code.name, cause)

    # Authentication with an allow list: python-fido2's server checks the signature.
    options, state = server.authenticate_begin(
        [credentials["alice"]], user_verification="required"
    )
    selection = client.get_assertion(options.public_key)
    response = selection.get_response(0)
    server.authenticate_complete(state, list(credentials.values()), response)
    step(
        "authenticated",
        "alice",
        response.response.authenticator_data.counter,
    )

    # The prf extension (hmac-secret underneath): one salt gives one secret, another salt
    # another.
    def prf(salt):
        options, state = server.authenticate_begin(
            [credentials["alice"]],
            user_verification="required",
            extensions={"prf": {"eval": {"first": salt}}},
        )
        response = client.get_assertion(options.public_key).get_response(0)
        server.authenticate_complete(state, list(credentials.values()), response)
        return ext_get(response.client_extension_results, "prf", "results", "first")

    first, again, other = prf(b"salt one"), prf(b"salt one"), prf(b"salt two")
    step(
        "prf",
        first is not None and len(first) > 0,
        first == again,
        first != other,
    )

    # largeBlob: python-fido2 writes alice's blob (encrypted with her largeBlobKey) with the
    # token it used for the assertion, whose lbw permission survives the touch; then reads it.
    def large_blob(extension):
        options, state = server.authenticate_begin(
            [credentials["alice"]],
            user_verification="required",
            extensions={"largeBlob": extension},
        )
        response = client.get_assertion(options.public_key).get_response(0)
        server.authenticate_complete(state, list(credentials.values()), response)
        return ext_get(response.client_extension_results, "largeBlob")

    written = large_blob({"write": b"alice's large blob"})
    step("large_blob_written", ext_get(written, "written"))
    blob = ext_get(large_blob({"read": True}), "blob")
    if isinstance(blob, str):  # JSON-style outputs carry bytes as websafe base64
        blob = websafe_decode(blob)
    step("large_blob_read", blob)

    # Discoverable: both users, through getNextAssertion.
    options, state = server.authenticate_begin(None, user_verification="required")
    selection = client.get_assertion(options.public_key)
    assertions = selection.get_assertions()
    names = []
    for i in range(len(assertions)):
        response = selection.get_response(i)
        server.authenticate_complete(state, list(credentials.values()), response)
        names.append(assertions[i].user["name"])
    step("discoverable", len(assertions), ",".join(sorted(names)))

    # Credential management: metadata, RPs, credentials, delete.
    token = client_pin.get_pin_token(pin, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    cm = CredentialManagement(ctap2, client_pin.protocol, token)
    meta = cm.get_metadata()
    step(
        "metadata",
        meta[CredentialManagement.RESULT.EXISTING_CRED_COUNT],
        meta[CredentialManagement.RESULT.MAX_REMAINING_COUNT],
    )
    rps = cm.enumerate_rps()
    step("rps", ",".join(rp[CredentialManagement.RESULT.RP]["id"] for rp in rps))
    creds = cm.enumerate_creds(hashlib.sha256(RP_ID.encode()).digest())
    users = sorted(c[CredentialManagement.RESULT.USER]["name"] for c in creds)
    step("creds", ",".join(users))
    bob = next(
        c for c in creds if c[CredentialManagement.RESULT.USER]["name"] == "bob"
    )
    cm.delete_cred(bob[CredentialManagement.RESULT.CREDENTIAL_ID])
    creds = cm.enumerate_creds(hashlib.sha256(RP_ID.encode()).digest())
    step(
        "after_delete",
        ",".join(sorted(c[CredentialManagement.RESULT.USER]["name"] for c in creds)),
    )

    # Bob's credential is gone for good.
    options, state = server.authenticate_begin(
        [PublicKeyCredentialDescriptor(type="public-key", id=credentials["bob"].credential_id)],
        user_verification="required",
    )
    try:
        client.get_assertion(options.public_key)
        raise AssertionError("a deleted credential still signs")
    except ClientError as e:
        cause = e.cause.code.name if isinstance(e.cause, CtapError) else e.cause
        step("deleted_refused", e.code.name, cause)

    step("ALL OK")


if __name__ == "__main__":
    main()
