/**
 * Writes the option table of docs/configuration.md from SERVER_OPTIONS (`npm run docs:config`): the text between
 * the `<!-- options -->` markers is replaced, the rest of the page is left as written.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { optionEnv, optionFlag, SERVER_OPTIONS, type OptionSpec } from '../../src/config/index.js';

const path = new URL('../../../docs/configuration.md', import.meta.url);
const cell = (s: string): string => s.replaceAll('|', '\\|').replaceAll('<', '&lt;');
const rows = Object.entries(SERVER_OPTIONS).map(([key, spec]) => {
  const o = spec as OptionSpec;
  const flag = typeof o.default === 'boolean' && o.default ? `--no-${optionFlag(key)}` : `--${optionFlag(key)}${o.arg === undefined ? '' : ` <${o.arg}>`}`;
  const shown = o.shown ?? (o.default === '' ? 'none' : String(o.default));
  const env = optionEnv(key) + (o.envAlso === undefined ? '' : `, or ${o.envAlso}`);
  return `| \`${key}\` | \`${flag}\`${o.short === undefined ? '' : ` (\`-${o.short}\`)`} | \`${env}\` | ${cell(shown)} | ${cell(o.help)} |`;
});
const table = ['| Key (config file) | Flag | Environment | Default | Meaning |', '|---|---|---|---|---|', ...rows].join('\n');
const text = await readFile(path, 'utf8');
const start = text.indexOf('<!-- options -->');
const end = text.indexOf('<!-- /options -->');
if (start < 0 || end < start) throw new Error('docs/configuration.md: the <!-- options --> markers are missing');
await writeFile(path, `${text.slice(0, start)}<!-- options -->\n${table}\n${text.slice(end)}`);
