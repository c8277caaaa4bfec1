"""Signed bundles: the whole bundle folder (manifest included) signed with OpenSSF's model-signing
library, key-based (elliptic-curve keys, works offline).

    mivl-export sign BUNDLE --key private.pem        # writes BUNDLE/bundle.sig
    Session(BUNDLE, trusted_keys=["public.pem"])      # refuses an unsigned or altered bundle

The signature covers every file of the bundle except itself and `engines/` (TensorRT engines are
built on the device after signing; a session that requires a signature does not load them). A
file flipped, edited, added or removed, or a signature by another key, is refused with the file
named.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import BundleError, InputError

SIGNATURE = "bundle.sig"
UNSIGNED = (SIGNATURE, "engines")


def _model_signing():
    try:
        import model_signing
    except ImportError as e:
        raise BundleError(f"signing needs OpenSSF's model-signing library (pip install 'mivl[sign]'): {e}") from None
    return model_signing


def _hashing(ms):
    return ms.hashing.Config().set_ignored_paths(paths=list(UNSIGNED), ignore_git_paths=False)


def sign_bundle(bundle, private_key) -> Path:
    """Sign the bundle folder with an elliptic-curve private key (PEM); returns the signature path."""
    ms = _model_signing()
    bundle, key = Path(bundle), Path(private_key)
    if not (bundle / "manifest.json").is_file():
        raise BundleError(f"{bundle} is not a bundle (no manifest.json)")
    if not key.is_file():
        raise InputError(f"private key not found: {key}")
    out = bundle / SIGNATURE
    tmp = bundle / (SIGNATURE + ".partial")
    try:
        ms.signing.Config().use_elliptic_key_signer(private_key=str(key)).set_hashing_config(_hashing(ms)).sign(
            bundle, tmp)
    except (ValueError, TypeError) as e:
        tmp.unlink(missing_ok=True)
        raise InputError(f"could not sign with {key}: {e} (an elliptic-curve private key in PEM is needed)") from None
    tmp.replace(out)
    return out


def verify_bundle(bundle, trusted_keys) -> str:
    """Check the bundle's signature against each trusted public key; returns the key that verified.
    Raises BundleError naming what is wrong (unsigned, the files that differ, or no key matches)."""
    ms = _model_signing()
    bundle = Path(bundle)
    keys = [Path(k) for k in trusted_keys]
    if not keys:
        raise InputError("trusted_keys is empty; give at least one public key (PEM)")
    for k in keys:
        if not k.is_file():
            raise InputError(f"trusted key not found: {k}")
    sig = bundle / SIGNATURE
    if not sig.is_file():
        raise BundleError(f"{bundle} is not signed ({SIGNATURE} is missing) but a trusted key is required; "
                          "sign it with mivl-export sign BUNDLE --key KEY")
    problems = []
    for k in keys:
        try:
            ms.verifying.Config().use_elliptic_key_verifier(public_key=str(k)).set_hashing_config(
                _hashing(ms)).verify(bundle, sig)
            return str(k)
        except Exception as e:   # the library raises ValueError and others; all mean "not verified"
            problems.append(_explain(str(e), k))
    raise BundleError(f"{bundle} failed its signature check: " + "; ".join(dict.fromkeys(problems)))


def _explain(message: str, key: Path) -> str:
    changed = re.findall(r"[Hh]ash mismatch for \\*'([^'\\]+)", message)
    extra = re.findall(r"""Extra files found in model '[^']*': (.+?)(?:['"]|\]|$)""", message)
    missing = re.findall(r"""[Mm]issing files? in model '[^']*': (.+?)(?:['"]|\]|$)""", message)
    parts = ([f"{', '.join(changed)} modified"] if changed else []) + \
            ([f"{', '.join(extra)} added"] if extra else []) + ([f"{', '.join(missing)} removed"] if missing else [])
    if parts:
        return "; ".join(parts)
    return f"the signature does not verify with {key.name} (signed by another key, or {SIGNATURE} is damaged)"
