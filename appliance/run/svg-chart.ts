// A plain horizontal bar chart as an SVG string, one panel per group (each group has
// its own unit and scale), for the benchmark result files.

export interface Bar {
  group: string;
  label: string;
  value: number;
}

const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1'];

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function fmt(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US');
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

export function barChartSvg(title: string, bars: readonly Bar[]): string {
  const groups: string[] = [];
  for (const b of bars) if (!groups.includes(b.group)) groups.push(b.group);
  const labels: string[] = [];
  for (const b of bars) if (!labels.includes(b.label)) labels.push(b.label);
  const color = (label: string): string => COLORS[labels.indexOf(label) % COLORS.length]!;
  const width = 760;
  const labelW = 190;
  const valueW = 80;
  const barMax = width - labelW - valueW - 20;
  const barH = 16;
  const gap = 4;
  let y = 40;
  const parts: string[] = [];
  parts.push(`<text x="10" y="24" font-size="15" font-weight="bold">${esc(title)}</text>`);
  for (const g of groups) {
    const rows = bars.filter((b) => b.group === g);
    const max = Math.max(...rows.map((r) => (Number.isFinite(r.value) ? r.value : 0)), 1e-9);
    y += 14;
    parts.push(`<text x="10" y="${y}" font-size="13" font-weight="bold">${esc(g)}</text>`);
    y += 6;
    for (const r of rows) {
      const w = Number.isFinite(r.value) ? Math.max(1, (r.value / max) * barMax) : 0;
      parts.push(`<text x="${labelW - 6}" y="${y + barH - 4}" font-size="12" text-anchor="end">${esc(r.label)}</text>`);
      parts.push(`<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${color(r.label)}"/>`);
      parts.push(`<text x="${(labelW + w + 4).toFixed(1)}" y="${y + barH - 4}" font-size="12">${esc(fmt(r.value))}</text>`);
      y += barH + gap;
    }
    y += 8;
  }
  const height = y + 10;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${parts.join('\n')}\n</svg>\n`;
}
