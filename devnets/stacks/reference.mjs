// Reference encodings from @stacks/transactions, for the byte-equality tests of the Python code
// (tests/stacks/test_reference_bytes.py). Reads a JSON array of cases on stdin, writes a JSON array:
//   {"kind": "cv", "value": <typed JSON>}                                    -> {"hex"}
//   {"kind": "call", "key", "network", "nonce", "fee", "contract_address",
//    "contract_name", "function", "args": [<typed JSON>], "post_condition_mode"} -> {"hex", "txid"}
//   {"kind": "deploy", "key", "network", "nonce", "fee", "contract_name", "source",
//    "clarity_version", "post_condition_mode"}                              -> {"hex", "txid"}
//   {"kind": "address", "key", "network"}                                    -> {"address"}

import {
  Cl,
  cvToHex,
  getAddressFromPrivateKey,
  makeContractCall,
  makeContractDeploy,
} from "@stacks/transactions";

function toCV(doc) {
  const v = doc.value;
  switch (doc.type) {
    case "int": return Cl.int(BigInt(v));
    case "uint": return Cl.uint(BigInt(v));
    case "bool": return Cl.bool(v);
    case "buffer": return Cl.bufferFromHex(v.replace(/^0x/, ""));
    case "principal": return Cl.principal(v);
    case "ok": return Cl.ok(toCV(v));
    case "err": return Cl.error(toCV(v));
    case "none": return Cl.none();
    case "some": return Cl.some(toCV(v));
    case "list": return Cl.list(v.map(toCV));
    case "tuple": return Cl.tuple(Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toCV(x)])));
    case "string-ascii": return Cl.stringAscii(v);
    case "string-utf8": return Cl.stringUtf8(v);
    default: throw new Error(`unknown type ${doc.type}`);
  }
}

async function run(c) {
  if (c.kind === "cv") return { hex: cvToHex(toCV(c.value)) };
  if (c.kind === "address") return { address: getAddressFromPrivateKey(c.key, c.network) };
  const common = {
    senderKey: c.key, network: c.network, nonce: BigInt(c.nonce), fee: BigInt(c.fee),
    postConditionMode: c.post_condition_mode || "deny",
  };
  const tx = c.kind === "call"
    ? await makeContractCall({
        ...common, contractAddress: c.contract_address, contractName: c.contract_name,
        functionName: c.function, functionArgs: c.args.map(toCV), validateWithAbi: false,
      })
    : await makeContractDeploy({
        ...common, contractName: c.contract_name, codeBody: c.source,
        ...(c.clarity_version ? { clarityVersion: c.clarity_version } : {}),
      });
  return { hex: tx.serialize(), txid: tx.txid() };
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const cases = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const out = [];
for (const c of cases) out.push(await run(c));
process.stdout.write(JSON.stringify(out));
