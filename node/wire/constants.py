"""The constants every node must agree on, in one place: protocol version, signature domains,
decoding limits, gossip topics, request protocols and the windows honest executors keep.

A node's own policy (how long it waits, how much it tolerates) lives once beside the rule it
parameterises, e.g. node/roles/judging.py (claims), node/gossip/params.py (mesh and scoring)."""

PROTOCOL_VERSION = 1
NETWORK_DEFAULT = "gpow-local"

# Domain separation: every signature names what it signs.
SIG_DOMAIN_ENVELOPE = b"gpow.envelope.v1\x00"

# Decoding limits (the frame size limit is configurable; these are hard ceilings of the schema).
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_NESTING = 12
MAX_TYPE_NAME = 48
MAX_STRING = 4096
MAX_LIST = 65536
DEFAULT_MAX_CLOCK_SKEW_MS = 120_000

# Gossip RPC bounds (gossipsub v1.1 caps IHAVE/IWANT per heartbeat; these cap one RPC, so that the
# largest RPC a peer may send decodes in a bounded, small time: at most
# MAX_IHAVE_PER_RPC * MAX_IHAVE_IDS + MAX_IWANT_IDS = 9,000 ids of 32 bytes, about 300 KB).
MAX_IHAVE_PER_RPC = 8  # IHAVE entries in one RPC (one per topic)
MAX_IHAVE_IDS = 1000  # message ids in one IHAVE entry
MAX_IWANT_IDS = 1000  # message ids in one RPC's IWANT
MAX_PUBLISH_PER_RPC = 256  # published messages in one RPC
MAX_CONTROL_PER_RPC = 64  # GRAFTs, and PRUNEs, in one RPC
MAX_SUBS_PER_RPC = 256  # subscription changes in one RPC
MAX_PRUNE_PEERS = 16  # signed peer records in one PRUNE (peer exchange)

# Rosters: signed executor attestations one miner may list (the validator's per-miner bound).
MAX_ROSTER_ENTRIES = 256  # executors one miner may list (a roster of 256 checks in ~47 ms, once per new entry)

# Gossip topics.
TOPIC_ROSTER = "gpow/roster/1"
TOPIC_CHALLENGE = "gpow/challenge/1"
TOPIC_REVEAL = "gpow/reveal/1"
TOPIC_VERDICT = "gpow/verdict/1"
TOPIC_PEERS = "gpow/peers/1"
TOPIC_BEACON = "gpow/beacon/1"
TOPIC_VALIDATOR_SET = "gpow/validator-set/1"

# Request/response protocol names.
PROTO_CHALLENGE = "gpow/challenge/1"
PROTO_REVEAL = "gpow/reveal/1"
PROTO_OPENINGS = "gpow/openings/1"
PROTO_REGISTER = "gpow/executor-register/1"
PROTO_PING = "gpow/ping/1"

NONCE_BYTES = 32
KX_PUBLIC_BYTES = 32  # X25519 key of the link's key exchange (node.net.secure)
HASH_BYTES = 32
KEY_BYTES = 32
SIGNATURE_BYTES = 64
CHALLENGE_ID_BYTES = 16
# The longest windows an honest executor keeps a challenge for: from its issue to the commitment
# deadline, and from the reveal to the openings. An executor drops a challenge past them whatever
# its deadlines say (one cheap challenge must not keep it BUSY for a day), and a validator treats
# a BUSY naming a challenge with longer windows as unproven.
MAX_COMMIT_WINDOW_S = 120
MAX_OPENINGS_TIMEOUT_S = 30
PROTO_PROOF = "gpow/proof/1"
PROTO_VALIDATOR_SET = "gpow/validator-set/1"
SIG_DOMAIN_BEACON = b"gpow.beacon.v1\x00"
