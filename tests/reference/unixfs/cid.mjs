// Print the root CID that ipfs-unixfs-importer gives each file named on the
// command line, one per line, with the options of `ipfs add --cid-version=1`
// (256 KiB chunks, raw leaves, balanced layout of 174 links per node).
import { readFile } from "node:fs/promises";
import { importer } from "ipfs-unixfs-importer";
import { fixedSize } from "ipfs-unixfs-importer/chunker";
import { balanced } from "ipfs-unixfs-importer/layout";
import { MemoryBlockstore } from "blockstore-core/memory";

for (const path of process.argv.slice(2)) {
  const content = await readFile(path);
  const options = {
    cidVersion: 1, rawLeaves: true, reduceSingleLeafToSelf: true,
    chunker: fixedSize({ chunkSize: 262144 }),
    layout: balanced({ maxChildrenPerNode: 174 }),
  };
  let root = null;
  for await (const entry of importer([{ content }], new MemoryBlockstore(), options)) {
    root = entry.cid;
  }
  console.log(root.toString());
}
