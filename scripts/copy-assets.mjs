// tsc emits only JavaScript; the Lua scripts the store loads at start-up must sit beside it in dist/.
import { cpSync } from 'node:fs';

cpSync('shared/store/lua', 'dist/shared/store/lua', { recursive: true });
