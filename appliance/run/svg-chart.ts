// A plain horizontal bar chart as an SVG string, one panel per group (each group has its
// own unit and scale), for the benchmark result files. Each panel says whether higher or
// lower is better and what was measured; a bar may carry a range (the spread of the
// rounds it is the median of), drawn as a thin line across the bar's end. Only figures
// measured in the run belong in it.

export interface Bar {
  group: string;
  label: string;
  value: number;
  /** The spread behind the value (e.g. the lowest and highest round), drawn as a whisker. */
  range?: readonly [number, number];
}

export interface Panel {
  better: 'higher' | 'lower';
  /** What was measured and how, e.g. "GET /big.html (133 KB), median of 3 rounds; line: lowest to highest round". */
  note?: string;
}

const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1'];

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function fmt(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US');
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

export function barChartSvg(title: string, bars: readonly Bar[], panels: Readonly<Record<string, Panel>> = {}): string {
  const groups: string[] = [];
  for (const b of bars) if (!groups.includes(b.group)) groups.push(b.group);
  const labels: string[] = [];
  for (const b of bars) if (!labels.includes(b.label)) labels.push(b.label);
  const color = (label: string): string => COLORS[labels.indexOf(label) % COLORS.length]!;
  const width = 900;
  const labelW = 190;
  const valueW = 150;
  const barMax = width - labelW - valueW - 20;
  const barH = 16;
  const gap = 4;
  let y = 40;
  const parts: string[] = [];
  parts.push(`<text x="10" y="24" font-size="15" font-weight="bold">${esc(title)}</text>`);
  for (const g of groups) {
    const rows = bars.filter((b) => b.group === g);
    const finite = (v: number): number => (Number.isFinite(v) ? v : 0);
    const max = Math.max(...rows.map((r) => Math.max(finite(r.value), finite(r.range?.[1] ?? 0))), 1e-9);
    const panel = panels[g];
    y += 14;
    const better = panel ? ` (${panel.better} is better)` : '';
    parts.push(`<text x="10" y="${y}" font-size="13" font-weight="bold">${esc(g)}${esc(better)}</text>`);
    if (panel?.note) {
      y += 14;
      parts.push(`<text x="10" y="${y}" font-size="11" fill="#555">${esc(panel.note)}</text>`);
    }
    y += 6;
    for (const r of rows) {
      const scale = (v: number): number => (finite(v) / max) * barMax;
      const w = Number.isFinite(r.value) ? Math.max(1, scale(r.value)) : 0;
      parts.push(`<text x="${labelW - 6}" y="${y + barH - 4}" font-size="12" text-anchor="end">${esc(r.label)}</text>`);
      parts.push(`<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${color(r.label)}"/>`);
      let textX = labelW + w + 4;
      if (r.range) {
        const [lo, hi] = r.range;
        const x1 = labelW + scale(lo);
        const x2 = labelW + scale(hi);
        const mid = y + barH / 2;
        parts.push(`<line x1="${x1.toFixed(1)}" y1="${mid}" x2="${x2.toFixed(1)}" y2="${mid}" stroke="#222" stroke-width="1.5"/>`);
        for (const x of [x1, x2]) parts.push(`<line x1="${x.toFixed(1)}" y1="${y + 3}" x2="${x.toFixed(1)}" y2="${y + barH - 3}" stroke="#222" stroke-width="1.5"/>`);
        textX = Math.max(textX, x2 + 4);
      }
      const rangeText = r.range ? ` (${fmt(r.range[0])}-${fmt(r.range[1])})` : '';
      parts.push(`<text x="${textX.toFixed(1)}" y="${y + barH - 4}" font-size="12">${esc(fmt(r.value) + rangeText)}</text>`);
      y += barH + gap;
    }
    y += 8;
  }
  const height = y + 10;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${parts.join('\n')}\n</svg>\n`;
}
