"""Evidence that the alert log was not rewritten: links, signatures, checkpoints, verification.

Every fact about an alert (raised, updated, retracted, acknowledged, resolved) is a *link*:
a canonical JSON document hashed together with its position and its predecessor's hash,
and signed with the service's Ed25519 key. At a fixed interval the service signs a
*checkpoint* of the chain's head (how many links, the last hash) and publishes it outside
the database. Someone who can rewrite the database but does not hold the key can neither
re-sign an edited link nor forge a checkpoint that covers fewer links, so

* an edited link fails its hash or, once recomputed, its signature: that link is named;
* a deleted tail is shorter than the last checkpoint says;
* an alert row whose status (or content) differs from the fold of its links, or that has
  no link at all, is named with its alert id.

The model is pure (no file, network or database access, no clock) so that a third party
can check an exported bundle with nothing but the public key: ``verify(bundle, keys)``.
Link hashes cover the stored document text byte for byte, so a verifier in another
language needs SHA-256, Ed25519 and a JSON parser, never our serialiser.

The model lives in four modules, each with its reason given there: the link vocabulary
(``audit_chain``: canonical JSON, facts, links, checkpoints), keys and signatures (``audit_sign``),
alerts as stored and the exported bundle (``audit_records``), and the verifier (``audit_verify``).
This module re-exports them, so ``from tracker import audit`` and ``audit.verify(...)`` read as one.
"""

from __future__ import annotations

from tracker.audit_chain import ACKNOWLEDGED as ACKNOWLEDGED
from tracker.audit_chain import ASSIGNED as ASSIGNED
from tracker.audit_chain import BUNDLE_FORMAT as BUNDLE_FORMAT
from tracker.audit_chain import CHECKPOINT_SIGNATURE_PREFIX as CHECKPOINT_SIGNATURE_PREFIX
from tracker.audit_chain import CHECKPOINT_TOPIC as CHECKPOINT_TOPIC
from tracker.audit_chain import FACTS as FACTS
from tracker.audit_chain import GENESIS as GENESIS
from tracker.audit_chain import LEGACY as LEGACY
from tracker.audit_chain import LINK_HASH_PREFIX as LINK_HASH_PREFIX
from tracker.audit_chain import LINK_SIGNATURE_PREFIX as LINK_SIGNATURE_PREFIX
from tracker.audit_chain import RAISED as RAISED
from tracker.audit_chain import REOPENED as REOPENED
from tracker.audit_chain import RESOLVED as RESOLVED
from tracker.audit_chain import RETRACTED as RETRACTED
from tracker.audit_chain import STATUSES as STATUSES
from tracker.audit_chain import TRANSITIONS as TRANSITIONS
from tracker.audit_chain import UPDATED as UPDATED
from tracker.audit_chain import AuditError as AuditError
from tracker.audit_chain import Checkpoint as Checkpoint
from tracker.audit_chain import Fact as Fact
from tracker.audit_chain import JSONValue as JSONValue
from tracker.audit_chain import Link as Link
from tracker.audit_chain import canonical as canonical
from tracker.audit_chain import comparable as comparable
from tracker.audit_chain import iso as iso
from tracker.audit_chain import jsonable as jsonable
from tracker.audit_chain import link_hash as link_hash
from tracker.audit_chain import make_checkpoint as make_checkpoint
from tracker.audit_chain import make_link as make_link
from tracker.audit_chain import parse_document as parse_document
from tracker.audit_chain import parse_ts as parse_ts
from tracker.audit_records import AlertRecord as AlertRecord
from tracker.audit_records import Bundle as Bundle
from tracker.audit_records import UpdateRecord as UpdateRecord
from tracker.audit_records import update_body as update_body
from tracker.audit_sign import Signer as Signer
from tracker.audit_sign import key_id as key_id
from tracker.audit_sign import load_private_key as load_private_key
from tracker.audit_sign import load_public_key as load_public_key
from tracker.audit_sign import private_pem as private_pem
from tracker.audit_sign import public_pem as public_pem
from tracker.audit_sign import signature_ok as signature_ok
from tracker.audit_verify import Finding as Finding
from tracker.audit_verify import Report as Report
from tracker.audit_verify import _apply as _apply
from tracker.audit_verify import _compare as _compare
from tracker.audit_verify import _State as _State
from tracker.audit_verify import _update_key as _update_key
from tracker.audit_verify import verify as verify
