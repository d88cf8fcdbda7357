// tsc emits only JavaScript; the Lua scripts the store loads at start-up and the status page's files
// must sit beside it in dist/.
// scripts/build.mjs calls copyAssets() on its fresh build; `node scripts/copy-assets.mjs` copies into dist/.
import { cpSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The source directories (relative to the project root) copied as they are into the build. */
export const ASSET_DIRS = ['shared/store/lua', 'gateway/background/lua', 'gateway/background/lane/lua', 'gateway/http/status-page/assets'];

/** Copies the assets into `outDir`, which mirrors the project root as tsc's output does. */
export function copyAssets(outDir, root = ROOT) {
  for (const dir of ASSET_DIRS) cpSync(join(root, dir), join(outDir, dir), { recursive: true });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) copyAssets(join(ROOT, 'dist'));
