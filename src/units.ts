/**
 * Human-readable units, dependency-free so that both the CLI (Node) and the web console (bundled by Vite from
 * web/) format sizes the same way.
 */

/** A byte count in binary units: `512 B`, `1.5 KiB`, `12 MiB` (one decimal below 10). */
export function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}
