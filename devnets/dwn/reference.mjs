// Reference values computed by dwn-sdk-js itself (the code the server runs), for cross-checking
// tributary.dwn.cid: reads [{"length": n} | {"object": {...}}] as JSON on stdin, prints
// [{"dataCid"} | {"cid"}]. Data of length n is the bytes i % 251.
import { Cid } from '@tbd54566975/dwn-sdk-js';

let input = '';
for await (const chunk of process.stdin) { input += chunk; }
const out = [];
for (const item of JSON.parse(input)) {
  if (item.length !== undefined) {
    const data = new Uint8Array(item.length);
    for (let i = 0; i < item.length; i++) { data[i] = i % 251; }
    out.push({ dataCid: await Cid.computeDagPbCidFromBytes(data) });
  } else {
    out.push({ cid: await Cid.computeCid(item.object) });
  }
}
process.stdout.write(JSON.stringify(out));
