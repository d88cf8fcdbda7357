/** A dependency-free SVG bar chart for docs/benchmarks.md: horizontal bars, one panel per metric group. */

export interface BarPanel {
  title: string;
  unit: string;
  /** One entry per series (e.g. p50, p99); each has a value per category. */
  series: { name: string; color: string; values: (number | null)[] }[];
}

const esc = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceMax(value: number): number {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

export function barChart(title: string, categories: string[], panels: BarPanel[], note = ''): string {
  const width = 820;
  const labelWidth = 240;
  const plotWidth = width - labelWidth - 90;
  const barHeight = 14;
  const gap = 3;
  let y = 34;
  const parts: string[] = [];
  parts.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`);
  for (const panel of panels) {
    const max = niceMax(Math.max(0, ...panel.series.flatMap((s) => s.values.map((v) => v ?? 0))));
    y += 18;
    parts.push(`<text x="10" y="${y}" font-size="13" font-weight="bold">${esc(panel.title)}</text>`);
    // The legend ends where the plot does: from the label column it ran over the panel's title.
    const legendWidth = panel.series.reduce((sum, s) => sum + 24 + s.name.length * 7, 0);
    let lx = labelWidth + plotWidth - legendWidth;
    for (const s of panel.series) {
      parts.push(
        `<rect x="${lx}" y="${y - 10}" width="10" height="10" fill="${s.color}"/><text x="${lx + 14}" y="${y}" font-size="11">${esc(s.name)}</text>`,
      );
      lx += 24 + s.name.length * 7;
    }
    y += 8;
    const top = y;
    categories.forEach((category, index) => {
      const groupHeight = panel.series.length * (barHeight + gap);
      parts.push(`<text x="${labelWidth - 8}" y="${y + groupHeight / 2 + 4}" text-anchor="end" font-size="12">${esc(category)}</text>`);
      for (const s of panel.series) {
        const value = s.values[index];
        const w = value === null || value === undefined ? 0 : Math.max(1, (value / max) * plotWidth);
        parts.push(`<rect x="${labelWidth}" y="${y}" width="${w.toFixed(1)}" height="${barHeight}" fill="${s.color}"/>`);
        const label = value === null || value === undefined ? 'n/a' : value >= 100 ? value.toFixed(0) : value.toFixed(2);
        parts.push(
          `<text x="${(labelWidth + w + 4).toFixed(1)}" y="${y + barHeight - 3}" font-size="11">${esc(label)} ${esc(panel.unit)}</text>`,
        );
        y += barHeight + gap;
      }
      y += 6;
    });
    // axis
    parts.push(`<line x1="${labelWidth}" y1="${top - 2}" x2="${labelWidth}" y2="${y - 4}" stroke="#444"/>`);
    parts.push(
      `<text x="${labelWidth + plotWidth}" y="${y + 8}" text-anchor="end" font-size="10" fill="#666">scale 0–${max} ${esc(panel.unit)}</text>`,
    );
    y += 14;
  }
  if (note) {
    y += 6;
    parts.push(`<text x="10" y="${y}" font-size="10" fill="#666">${esc(note)}</text>`);
  }
  const height = y + 12;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
${parts.join('\n')}
</svg>
`;
}

/**
 * Several bar charts one under the other in one SVG, each with categories of its own (barChart's
 * panels share theirs): each chart is barChart's output, nested at its offset.
 */
export function stackedBarCharts(
  title: string,
  charts: { title: string; categories: string[]; panels: BarPanel[]; note?: string }[],
): string {
  const width = 820;
  let y = 30;
  const parts = [`<text x="${width / 2}" y="20" text-anchor="middle" font-size="16" font-weight="bold">${esc(title)}</text>`];
  for (const chart of charts) {
    const svg = barChart(chart.title, chart.categories, chart.panels, chart.note);
    const height = Number(/height="(\d+(?:\.\d+)?)"/.exec(svg)?.[1] ?? 0);
    parts.push(svg.replace('<svg ', `<svg x="0" y="${y}" `).replace(/^<\?xml[^>]*>\s*/, ''));
    y += height + 6;
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
${parts.join('\n')}
</svg>
`;
}
