// A TEST DOUBLE of a stacks-core node's RPC: the clarinet-sdk simnet (real Clarity, offline) behind
// an HTTP server answering the shapes of shared/specs/stacks/rpc/openapi.yaml. See README.md for what
// is real and what is not.
//
//   node server.mjs [--host 127.0.0.1] [--port 20443] [--network testnet|mainnet] [--epoch 3.3]
//
// Prints "stacks devnet ready on http://HOST:PORT" once it accepts requests.

import { createHash } from "node:crypto";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { initSimnet } from "@hirosystems/clarinet-sdk";
import {
  PayloadType,
  addressToString,
  cvToHex,
  cvToString,
  deserializeTransaction,
  hexToCV,
  isSingleSig,
  AddressHashMode,
  AuthType,
  AddressVersion,
  addressFromVersionHash,
} from "@stacks/transactions";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const { values: opts } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "20443" },
    network: { type: "string", default: "testnet" },
    epoch: { type: "string", default: "3.3" },
    manifest: { type: "string", default: path.join(HERE, "Clarinet.toml") },
  },
});

const MAINNET = opts.network === "mainnet";
const NETWORK = {
  txVersion: MAINNET ? 0x00 : 0x80,
  chainId: MAINNET ? 0x00000001 : 0x80000000,
  peerVersion: MAINNET ? 0x18000000 : 0xfacade01,
  addressVersion: MAINNET ? AddressVersion.MainnetSingleSig : AddressVersion.TestnetSingleSig,
};

const simnet = await initSimnet(opts.manifest, true);
simnet.setEpoch(opts.epoch);

// State the simnet does not keep: account nonces (per origin address) and mined transactions.
const nonces = new Map();
const transactions = new Map(); // txid -> {tx, result, result_hex, tx_status, block_height, index_block_hash, events}
const tipHash = () => createHash("sha256").update(`tributary-stacks-devnet:${simnet.stacksBlockHeight}`).digest("hex");

class Rejection extends Error {
  constructor(reason, message, reasonData) {
    super(message);
    this.reason = reason;
    this.reasonData = reasonData;
  }
}

function stxBalance(principal) {
  const stx = simnet.getAssetsMap().get("STX");
  return (stx && stx.get(principal)) || 0n;
}

function hex128(value) {
  return "0x" + BigInt(value).toString(16).padStart(32, "0");
}

function contractInterface(contractId) {
  return simnet.getContractsInterfaces().get(contractId);
}

function send(res, status, body, type = "application/json") {
  const data = type === "application/json" ? JSON.stringify(body) : String(body);
  res.writeHead(status, { "Content-Type": type, "Content-Length": Buffer.byteLength(data) });
  res.end(data);
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

// ------------------------------------------------------------------ POST /v2/transactions
function originAddress(tx) {
  const cond = tx.auth.spendingCondition;
  return addressToString(addressFromVersionHash(NETWORK.addressVersion, cond.signer));
}

function checkTransaction(tx, txid) {
  if (tx.transactionVersion !== NETWORK.txVersion || tx.chainId !== NETWORK.chainId) {
    throw new Rejection("BadTransactionVersion",
      `transaction version/chain id ${tx.transactionVersion}/${tx.chainId} is not this network's`);
  }
  if (tx.auth.authType !== AuthType.Standard) {
    throw new Rejection("NotSupported", "this test double accepts standard (non-sponsored) authorization only");
  }
  const cond = tx.auth.spendingCondition;
  if (!isSingleSig(cond) || cond.hashMode !== AddressHashMode.P2PKH) {
    throw new Rejection("NotSupported", "this test double accepts single-sig P2PKH spending conditions only");
  }
  try {
    // Recovers the public key from the signature over the presign sighash and compares its hash160
    // with the spending condition's signer (throws on any mismatch).
    tx.verifyOrigin();
  } catch (err) {
    throw new Rejection("SignatureValidation", `signature does not match the origin: ${err.message}`);
  }
  const sender = originAddress(tx);
  const expected = nonces.get(sender) || 0;
  const actual = Number(cond.nonce);
  if (actual !== expected) {
    throw new Rejection("BadNonce", `bad nonce ${actual}, expected ${expected}`,
      { actual, expected, is_origin: true, principal: sender });
  }
  return sender;
}

function execute(tx, sender) {
  const p = tx.payload;
  if (p.payloadType === PayloadType.ContractCall) {
    const contractId = `${addressToString(p.contractAddress)}.${p.contractName.content}`;
    const iface = contractInterface(contractId);
    if (!iface) throw new Rejection("NoSuchContract", `no contract ${contractId}`);
    const fn = iface.functions.find((f) => f.name === p.functionName.content);
    if (!fn || fn.access !== "public") {
      throw new Rejection("NoSuchPublicFunction", `no public function ${p.functionName.content} in ${contractId}`);
    }
    try {
      return simnet.callPublicFn(contractId, p.functionName.content, p.functionArgs, sender);
    } catch (err) {
      throw new Rejection("BadFunctionArgument", String(err.message || err));
    }
  }
  if (p.payloadType === PayloadType.SmartContract || p.payloadType === PayloadType.VersionedSmartContract) {
    const contractId = `${sender}.${p.contractName.content}`;
    if (contractInterface(contractId)) {
      throw new Rejection("ContractAlreadyExists", `contract ${contractId} already exists`, { contract_identifier: contractId });
    }
    const options = p.payloadType === PayloadType.VersionedSmartContract ? { clarityVersion: p.clarityVersion } : null;
    try {
      return simnet.deployContract(p.contractName.content, p.codeBody.content, options, sender);
    } catch (err) {
      throw new Rejection("ContractAnalysis", String(err.message || err));
    }
  }
  if (p.payloadType === PayloadType.TokenTransfer) {
    const recipient = cvToString(p.recipient);
    try {
      return simnet.transferSTX(p.amount, recipient, sender);
    } catch (err) {
      throw new Rejection("NotEnoughFunds", String(err.message || err));
    }
  }
  throw new Rejection("NotSupported", `payload type ${p.payloadType} is not supported by this test double`);
}

async function postTransaction(req, res) {
  const body = await readBody(req);
  let raw = body;
  if ((req.headers["content-type"] || "").startsWith("application/json")) {
    try {
      raw = Buffer.from(JSON.parse(body.toString("utf8")).tx, "hex");
    } catch {
      return send(res, 400, "Failed to decode transaction", "text/plain");
    }
  }
  let tx;
  try {
    tx = deserializeTransaction(new Uint8Array(raw));
  } catch (err) {
    return send(res, 400, `Failed to decode transaction: ${err.message}`, "text/plain");
  }
  const txid = tx.txid();
  if (transactions.has(txid)) {
    return send(res, 200, txid); // the node answers a repeat of a known transaction with its txid
  }
  try {
    const sender = checkTransaction(tx, txid);
    const receipt = execute(tx, sender);
    nonces.set(sender, (nonces.get(sender) || 0) + 1);
    const result = receipt.result;
    transactions.set(txid, {
      tx: Buffer.from(raw).toString("hex"),
      result: cvToString(result),
      result_hex: cvToHex(result),
      tx_status: result.type === "err" ? "abort_by_response" : "success",
      block_height: simnet.stacksBlockHeight,
      index_block_hash: tipHash(),
      events: receipt.events.map((e) => ({ event: e.event, data: JSON.parse(JSON.stringify(e.data, (k, v) => (typeof v === "bigint" ? v.toString() : v))) })),
    });
    console.log(`mined ${txid} from ${sender} at ${simnet.stacksBlockHeight}: ${cvToString(result)}`);
    return send(res, 200, txid);
  } catch (err) {
    if (!(err instanceof Rejection)) throw err;
    console.log(`rejected ${txid}: ${err.reason} ${err.message}`);
    const doc = { error: "transaction rejected", reason: err.reason, txid };
    doc.reason_data = err.reasonData || { message: err.message };
    return send(res, 400, doc);
  }
}

// ------------------------------------------------------------------ routes
const routes = [
  ["GET", /^\/v2\/info$/, (req, res) => {
    const height = simnet.stacksBlockHeight;
    send(res, 200, {
      peer_version: NETWORK.peerVersion,
      pox_consensus: createHash("sha1").update(`pox:${simnet.burnBlockHeight}`).digest("hex"),
      burn_block_height: simnet.burnBlockHeight,
      stable_pox_consensus: createHash("sha1").update(`pox:${Math.max(simnet.burnBlockHeight - 1, 0)}`).digest("hex"),
      stable_burn_block_height: Math.max(simnet.burnBlockHeight - 1, 0),
      server_version: "tributary-stacks-devnet 0.1.0 (clarinet-sdk simnet test double; not stacks-node)",
      network_id: NETWORK.chainId,
      parent_network_id: MAINNET ? 3652501241 : 118034699,
      stacks_tip_height: height,
      stacks_tip: tipHash(),
      stacks_tip_consensus_hash: createHash("sha1").update(`tip:${height}`).digest("hex"),
      genesis_chainstate_hash: "0".repeat(64),
      unanchored_tip: null,
      unanchored_seq: null,
      tenure_height: simnet.burnBlockHeight,
      exit_at_block_height: null,
      is_fully_synced: true,
      node_public_key: null,
      node_public_key_hash: null,
      stackerdbs: [],
    });
  }],
  ["GET", /^\/v2\/accounts\/([^/?]+)$/, (req, res, m, url) => {
    const principal = decodeURIComponent(m[1]);
    const doc = { balance: hex128(stxBalance(principal)), locked: hex128(0), unlock_height: 0, nonce: nonces.get(principal) || 0 };
    if (url.searchParams.get("proof") !== "0") {
      doc.balance_proof = "";
      doc.nonce_proof = "";
    }
    send(res, 200, doc);
  }],
  ["POST", /^\/v2\/contracts\/call-read\/([^/]+)\/([^/]+)\/([^/?]+)$/, async (req, res, m) => {
    const contractId = `${m[1]}.${m[2]}`;
    let body;
    try {
      body = JSON.parse((await readBody(req)).toString("utf8"));
    } catch {
      return send(res, 400, "Failed to parse JSON body", "text/plain");
    }
    if (!contractInterface(contractId)) return send(res, 404, `No contract ${contractId}`, "text/plain");
    try {
      const args = (body.arguments || []).map((a) => hexToCV(a));
      const out = simnet.callReadOnlyFn(contractId, decodeURIComponent(m[3]), args, body.sender);
      send(res, 200, { okay: true, result: cvToHex(out.result) });
    } catch (err) {
      send(res, 200, { okay: false, cause: String(err.message || err) });
    }
  }],
  ["GET", /^\/v2\/contracts\/interface\/([^/]+)\/([^/?]+)$/, (req, res, m) => {
    const iface = contractInterface(`${m[1]}.${m[2]}`);
    if (!iface) return send(res, 404, `No contract ${m[1]}.${m[2]}`, "text/plain");
    send(res, 200, iface);
  }],
  ["GET", /^\/v2\/contracts\/source\/([^/]+)\/([^/?]+)$/, (req, res, m) => {
    const source = simnet.getContractSource(`${m[1]}.${m[2]}`);
    if (source === undefined) return send(res, 404, `No contract ${m[1]}.${m[2]}`, "text/plain");
    send(res, 200, { source, publish_height: 0, proof: "" });
  }],
  ["POST", /^\/v2\/transactions$/, postTransaction],
  ["GET", /^\/v3\/transaction\/([0-9a-f]{64})$/, (req, res, m) => {
    const info = transactions.get(m[1]);
    if (!info) return send(res, 404, "Transaction not found", "text/plain");
    send(res, 200, {
      index_block_hash: info.index_block_hash, tx: info.tx, result: info.result, block_height: info.block_height,
      is_canonical: true,
      // Extensions of this test double (not in the node's spec): see README.md.
      result_hex: info.result_hex, tx_status: info.tx_status, events: info.events,
    });
  }],
  ["GET", /^\/v2\/transactions\/unconfirmed\/([0-9a-f]{64})$/, (req, res) => {
    // Transactions are mined as they arrive: nothing ever waits in this mempool.
    send(res, 404, "Transaction not found in mempool", "text/plain");
  }],
  ["GET", /^\/v3\/health$/, (req, res) => {
    send(res, 200, { difference_from_max_peer: 0, max_stacks_height_of_neighbors: simnet.stacksBlockHeight, node_stacks_tip_height: simnet.stacksBlockHeight });
  }],
];

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://localhost");
  try {
    for (const [method, pattern, handler] of routes) {
      const m = url.pathname.match(pattern);
      if (m) {
        if (req.method !== method) return send(res, 405, "Method not allowed", "text/plain");
        return await handler(req, res, m, url);
      }
    }
    send(res, 404, `Not found: ${url.pathname} (not served by this test double)`, "text/plain");
  } catch (err) {
    console.error(err);
    send(res, 500, { error: "internal error", reason: String(err.message || err) });
  }
});

server.listen(Number(opts.port), opts.host, () => {
  const { port } = server.address();
  console.log(`stacks devnet ready on http://${opts.host}:${port} (${opts.network}, epoch ${opts.epoch})`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
