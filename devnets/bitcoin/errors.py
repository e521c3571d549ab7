"""Bitcoin Core's JSON-RPC error codes (src/rpc/protocol.h) and the exception that carries them."""

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
MISC_ERROR = -1
TYPE_ERROR = -3
WALLET_ERROR = -4
INVALID_ADDRESS_OR_KEY = -5
WALLET_INSUFFICIENT_FUNDS = -6
INVALID_PARAMETER = -8
DESERIALIZATION_ERROR = -22
VERIFY_ERROR = -25
VERIFY_REJECTED = -26
VERIFY_ALREADY_IN_CHAIN = -27
IN_WARMUP = -28
WALLET_NOT_FOUND = -18
WALLET_NOT_SPECIFIED = -19
WALLET_ALREADY_LOADED = -35


class RPCError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
