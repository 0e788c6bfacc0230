/**
 * @module
 * Filtering a Prometheus text exposition by label values, so a tenant's key scrapes only the series of its
 * own models and its own tenant label. Comment lines (HELP/TYPE) are kept; sample lines are kept when
 * `keep(labels)` says so. Label values are parsed with the format's escapes (\\, \", \n).
 */

/** The labels of one sample line, or null for a line that is not a sample. */
export function sampleLabels(line: string): Map<string, string> | null {
  if (line === '' || line.startsWith('#')) return null;
  const open = line.indexOf('{');
  const space = line.indexOf(' ');
  const labels = new Map<string, string>();
  if (open < 0 || (space >= 0 && space < open)) return labels;
  let i = open + 1;
  while (i < line.length && line[i] !== '}') {
    const eq = line.indexOf('=', i);
    if (eq < 0 || line[eq + 1] !== '"') return labels;
    const name = line.slice(i, eq).trim();
    let j = eq + 2;
    let value = '';
    while (j < line.length && line[j] !== '"') {
      if (line[j] === '\\' && j + 1 < line.length) {
        const c = line[j + 1];
        value += c === 'n' ? '\n' : c;
        j += 2;
      } else {
        value += line[j];
        j++;
      }
    }
    labels.set(name, value);
    i = j + 1;
    if (line[i] === ',') i++;
  }
  return labels;
}

export function filterExposition(text: string, keep: (labels: ReadonlyMap<string, string>) => boolean): string {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const labels = sampleLabels(line);
    if (labels === null || keep(labels)) out.push(line);
  }
  return out.join('\n');
}
