"""Bitcoin Core: the JSON-RPC hook, consensus parsing of blocks into rows, and their warehouse store."""
