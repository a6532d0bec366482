"""IKEv2 wire constants (RFC 7296 §3 and the IANA "IKEv2 Parameters" registry).

Numbers only: the codec and the IKE layer speak in these enums, the console
shows the short names strongSwan logs (``N(NATD_S_IP)``, ``N(FRAG_SUP)``), so an
admin can lay our log beside charon's.
"""

from __future__ import annotations

import enum

IKE_HEADER_SIZE = 28
"""Fixed IKE header: two SPIs, next payload, version, exchange, flags, MID, length."""
GENERIC_HEADER_SIZE = 4
"""Generic payload header: next payload, critical bit, reserved, payload length."""
IKE_VERSION = 0x20
"""Major version 2, minor 0, as sent (RFC 7296 §3.1)."""

FLAG_INITIATOR = 0x08
"""I: set by the original initiator of the IKE SA."""
FLAG_VERSION = 0x10
"""V: the sender could speak a higher major version (never set by us)."""
FLAG_RESPONSE = 0x20
"""R: this message is a response."""

CRITICAL_BIT = 0x80
"""The C bit in the generic payload header's second octet."""

NON_ESP_MARKER = b"\0\0\0\0"
"""RFC 3948 §2.2: IKE on port 4500 starts with four zero octets (an ESP SPI of 0)."""
NATT_KEEPALIVE = b"\xff"
"""RFC 3948 §2.3: the one-octet NAT keepalive."""


class ExchangeType(enum.IntEnum):
    """IKEv2 Exchange Types."""

    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37
    IKE_SESSION_RESUME = 38  # RFC 5723
    GSA_AUTH = 39  # G-IKEv2
    GSA_REGISTRATION = 40
    GSA_REKEY = 41
    IKE_INTERMEDIATE = 43  # RFC 9242
    IKE_FOLLOWUP_KE = 44  # RFC 9370


class PayloadType(enum.IntEnum):
    """IKEv2 Payload Types (RFC 7296 §3.2, RFC 7383)."""

    NONE = 0
    SA = 33
    KE = 34
    IDi = 35
    IDr = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40
    NOTIFY = 41
    DELETE = 42
    VENDOR = 43
    TSi = 44
    TSr = 45
    SK = 46
    CP = 47
    EAP = 48
    GSPM = 49  # RFC 6467
    IDg = 50  # G-IKEv2
    GSA = 51
    KD = 52
    SKF = 53  # RFC 7383
    PS = 54  # RFC 8019 puzzle solution


class NotifyType(enum.IntEnum):
    """IKEv2 Notify Message Types: errors below 16384, status from 16384."""

    # -- errors (RFC 7296 §3.10.1 and later RFCs)
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    UNACCEPTABLE_ADDRESSES = 40  # RFC 4555
    UNEXPECTED_NAT_DETECTED = 41  # RFC 4555
    USE_ASSIGNED_HoA = 42  # RFC 5026
    TEMPORARY_FAILURE = 43
    CHILD_SA_NOT_FOUND = 44
    INVALID_GROUP_ID = 45  # G-IKEv2
    AUTHORIZATION_FAILED = 46  # G-IKEv2
    STATE_NOT_FOUND = 47  # RFC 9370
    TS_MAX_QUEUE = 48  # RFC 9611

    # -- status
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    HTTP_CERT_LOOKUP_SUPPORTED = 16392
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    MOBIKE_SUPPORTED = 16396  # RFC 4555
    ADDITIONAL_IP4_ADDRESS = 16397
    ADDITIONAL_IP6_ADDRESS = 16398
    NO_ADDITIONAL_ADDRESSES = 16399
    UPDATE_SA_ADDRESSES = 16400
    COOKIE2 = 16401
    NO_NATS_ALLOWED = 16402
    AUTH_LIFETIME = 16403  # RFC 4478
    MULTIPLE_AUTH_SUPPORTED = 16404  # RFC 4739
    ANOTHER_AUTH_FOLLOWS = 16405
    REDIRECT_SUPPORTED = 16406  # RFC 5685
    REDIRECT = 16407
    REDIRECTED_FROM = 16408
    TICKET_LT_OPAQUE = 16409  # RFC 5723
    TICKET_REQUEST = 16410
    TICKET_ACK = 16411
    TICKET_NACK = 16412
    TICKET_OPAQUE = 16413
    LINK_ID = 16414  # RFC 5739
    USE_WESP_MODE = 16415  # RFC 5840
    ROHC_SUPPORTED = 16416  # RFC 5857
    EAP_ONLY_AUTHENTICATION = 16417  # RFC 5998
    CHILDLESS_IKEV2_SUPPORTED = 16418  # RFC 6023
    QUICK_CRASH_DETECTION = 16419  # RFC 6290
    IKEV2_MESSAGE_ID_SYNC_SUPPORTED = 16420  # RFC 6311
    IPSEC_REPLAY_COUNTER_SYNC_SUPPORTED = 16421
    IKEV2_MESSAGE_ID_SYNC = 16422
    IPSEC_REPLAY_COUNTER_SYNC = 16423
    SECURE_PASSWORD_METHODS = 16424  # RFC 6467
    PSK_PERSIST = 16425  # RFC 6631
    PSK_CONFIRM = 16426
    ERX_SUPPORTED = 16427  # RFC 6867
    IFOM_CAPABILITY = 16428
    SENDER_REQUEST_ID = 16429
    IKEV2_FRAGMENTATION_SUPPORTED = 16430  # RFC 7383
    SIGNATURE_HASH_ALGORITHMS = 16431  # RFC 7427
    CLONE_IKE_SA_SUPPORTED = 16432  # RFC 7791
    CLONE_IKE_SA = 16433
    PUZZLE = 16434  # RFC 8019
    USE_PPK = 16435  # RFC 8784
    PPK_IDENTITY = 16436
    NO_PPK_AUTH = 16437
    INTERMEDIATE_EXCHANGE_SUPPORTED = 16438  # RFC 9242
    IP4_ALLOWED = 16439  # RFC 8983
    IP6_ALLOWED = 16440
    ADDITIONAL_KEY_EXCHANGE = 16441  # RFC 9370
    USE_AGGFRAG = 16442  # RFC 9347
    SUPPORTED_AUTH_METHODS = 16443  # RFC 9593
    SA_RESOURCE_INFO = 16444  # RFC 9611

    @property
    def is_error(self) -> bool:
        return self < 16384


# strongSwan's notify_type_short_names (src/libcharon/encoding/payloads/notify_payload.c);
# the few it lacks get names in the same style.
_NOTIFY_SHORT: dict[int, str] = {
    1: "CRIT",
    4: "INVAL_IKE_SPI",
    5: "INVAL_MAJOR",
    7: "INVAL_SYN",
    9: "INVAL_MID",
    11: "INVAL_SPI",
    14: "NO_PROP",
    17: "INVAL_KE",
    24: "AUTH_FAILED",
    34: "SINGLE_PAIR",
    35: "NO_ADD_SAS",
    36: "INT_ADDR_FAIL",
    37: "FAIL_CP_REQ",
    38: "TS_UNACCEPT",
    39: "INVAL_SEL",
    40: "UNACCEPT_ADDR",
    41: "UNEXPECT_NAT",
    42: "ASSIGNED_HoA",
    43: "TEMP_FAIL",
    44: "NO_CHILD_SA",
    45: "INVAL_GROUP_ID",
    46: "AUTHZ_FAILED",
    47: "NO_STATE",
    48: "MAX_QUEUE",
    16384: "INIT_CONTACT",
    16385: "SET_WINSIZE",
    16386: "ADD_TS_POSS",
    16387: "IPCOMP_SUP",
    16388: "NATD_S_IP",
    16389: "NATD_D_IP",
    16390: "COOKIE",
    16391: "USE_TRANSP",
    16392: "HTTP_CERT_LOOK",
    16393: "REKEY_SA",
    16394: "ESP_TFC_PAD_N",
    16395: "NON_FIRST_FRAG",
    16396: "MOBIKE_SUP",
    16397: "ADD_4_ADDR",
    16398: "ADD_6_ADDR",
    16399: "NO_ADD_ADDR",
    16400: "UPD_SA_ADDR",
    16401: "COOKIE2",
    16402: "NO_NATS",
    16403: "AUTH_LFT",
    16404: "MULT_AUTH",
    16405: "AUTH_FOLLOWS",
    16406: "REDIR_SUP",
    16407: "REDIR",
    16408: "REDIR_FROM",
    16409: "TKT_LT_OPAK",
    16410: "TKT_REQ",
    16411: "TKT_ACK",
    16412: "TKT_NACK",
    16413: "TKT_OPAK",
    16414: "LINK_ID",
    16415: "WESP_MODE",
    16416: "ROHC_SUP",
    16417: "EAP_ONLY",
    16418: "CHDLESS_SUP",
    16419: "CRASH_DET",
    16420: "MSG_ID_SYN_SUP",
    16421: "RPL_CTR_SYN_SUP",
    16422: "MSG_ID_SYN",
    16423: "RPL_CTR_SYN",
    16424: "SEC_PASSWD",
    16425: "PSK_PST",
    16426: "PSK_CFM",
    16427: "ERX_SUP",
    16428: "IFOM_CAP",
    16429: "SENDER_REQ_ID",
    16430: "FRAG_SUP",
    16431: "HASH_ALG",
    16432: "CLONE_SUP",
    16433: "CLONE",
    16434: "PUZZLE",
    16435: "USE_PPK",
    16436: "PPK_ID",
    16437: "NO_PPK",
    16438: "IKE_INT_SUP",
    16439: "IP4_ALLOWED",
    16440: "IP6_ALLOWED",
    16441: "ADD_KE",
    16442: "AGGFRAG",
    16443: "AUTH_METHODS",
    16444: "RES_INFO",
}


def short_name(notify_type: int) -> str:
    """strongSwan's log abbreviation of a notify type (``NATD_S_IP``); the number if unknown."""
    return _NOTIFY_SHORT.get(notify_type) or str(int(notify_type))


def notify_name(notify_type: int) -> str:
    """The IANA name of a notify type (``NO_PROPOSAL_CHOSEN``); the number if unknown."""
    try:
        return NotifyType(notify_type).name
    except ValueError:
        return str(int(notify_type))


def exchange_name(exchange: int) -> str:
    """The IANA name of an exchange type; ``EXCHANGE_<n>`` if unknown."""
    try:
        return ExchangeType(exchange).name
    except ValueError:
        return f"EXCHANGE_{int(exchange)}"


class ProtocolId(enum.IntEnum):
    """Security Protocol Identifiers (proposals, Notify, Delete)."""

    NONE = 0
    IKE = 1
    AH = 2
    ESP = 3


class IdType(enum.IntEnum):
    """IKEv2 Identification Payload ID Types (RFC 7296 §3.5, RFC 7619)."""

    IPV4_ADDR = 1
    FQDN = 2
    RFC822_ADDR = 3
    IPV6_ADDR = 5
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11
    FC_NAME = 12
    NULL = 13


class AuthMethod(enum.IntEnum):
    """IKEv2 Authentication Methods (RFC 7296 §3.8, RFC 4754, RFC 7427, RFC 7619)."""

    RSA_SIG = 1
    PSK = 2
    DSS = 3
    ECDSA_256 = 9
    ECDSA_384 = 10
    ECDSA_521 = 11
    GENERIC_SECURE_PASSWORD = 12
    NULL = 13
    DIGITAL_SIGNATURE = 14


class TsType(enum.IntEnum):
    """Traffic selector types (RFC 7296 §3.13.1, RFC 9478)."""

    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8
    FC_ADDR_RANGE = 9
    SECLABEL = 10


class CertEncoding(enum.IntEnum):
    """IKEv2 Certificate Encodings (RFC 7296 §3.6, RFC 4806, RFC 7670)."""

    PKCS7_X509 = 1
    PGP = 2
    DNS_SIGNED_KEY = 3
    X509_SIGNATURE = 4
    KERBEROS_TOKEN = 6
    CRL = 7
    ARL = 8
    SPKI = 9
    X509_ATTRIBUTE = 10
    RAW_RSA_KEY = 11
    HASH_URL_X509 = 12
    HASH_URL_X509_BUNDLE = 13
    OCSP_CONTENT = 14
    RAW_PUBLIC_KEY = 15


class CfgType(enum.IntEnum):
    """Configuration payload types (RFC 7296 §3.15)."""

    CFG_REQUEST = 1
    CFG_REPLY = 2
    CFG_SET = 3
    CFG_ACK = 4


class CfgAttr(enum.IntEnum):
    """Configuration attribute types (RFC 7296 §3.15.1 and later RFCs)."""

    INTERNAL_IP4_ADDRESS = 1
    INTERNAL_IP4_NETMASK = 2
    INTERNAL_IP4_DNS = 3
    INTERNAL_IP4_NBNS = 4
    INTERNAL_IP4_DHCP = 6
    APPLICATION_VERSION = 7
    INTERNAL_IP6_ADDRESS = 8
    INTERNAL_IP6_DNS = 10
    INTERNAL_IP6_DHCP = 12
    INTERNAL_IP4_SUBNET = 13
    SUPPORTED_ATTRIBUTES = 14
    INTERNAL_IP6_SUBNET = 15
    MIP6_HOME_PREFIX = 16
    INTERNAL_IP6_LINK = 17
    INTERNAL_IP6_PREFIX = 18
    HOME_AGENT_ADDRESS = 19
    P_CSCF_IP4_ADDRESS = 20
    P_CSCF_IP6_ADDRESS = 21
    FTT_KAT = 22
    EXTERNAL_SOURCE_IP4_NAT_INFO = 23
    TIMEOUT_PERIOD_FOR_LIVENESS_CHECK = 24
    INTERNAL_DNS_DOMAIN = 25
    INTERNAL_DNSSEC_TA = 26


# strongSwan's configuration_attribute_type_short_names, for CPRQ(ADDR DNS).
CFG_ATTR_SHORT: dict[int, str] = {
    1: "ADDR", 2: "MASK", 3: "DNS", 4: "NBNS", 5: "EXP", 6: "DHCP", 7: "VER",
    8: "ADDR6", 9: "MASK6", 10: "DNS6", 11: "NBNS6", 12: "DHCP6", 13: "SUBNET",
    14: "SUP", 15: "SUBNET6", 16: "MIP6HPFX", 17: "LINK6", 18: "PFX6", 19: "HOA",
    20: "PCSCF4", 21: "PCSCF6", 22: "FTTKAT", 23: "EXTSRC4", 24: "DPD",
    25: "DOMAIN", 26: "TA",
}


class EapCode(enum.IntEnum):
    """EAP codes (RFC 3748 §4)."""

    REQUEST = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4


class HashAlgorithm(enum.IntEnum):
    """IKEv2 Hash Algorithms for SIGNATURE_HASH_ALGORITHMS (RFC 7427 §7, RFC 8420)."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5


# Short payload names as strongSwan logs them (payload_type_short_names).
PAYLOAD_SHORT: dict[int, str] = {
    0: "--", 33: "SA", 34: "KE", 35: "IDi", 36: "IDr", 37: "CERT", 38: "CERTREQ",
    39: "AUTH", 40: "No", 41: "N", 42: "D", 43: "V", 44: "TSi", 45: "TSr", 46: "E",
    47: "CP", 48: "EAP", 49: "GSPM", 50: "IDg", 51: "GSA", 52: "KD", 53: "EF", 54: "PS",
}
