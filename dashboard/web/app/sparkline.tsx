// A small line chart of a series (a gap where a value is null), plain SVG: no chart library.

const W = 240;
const H = 48;
const PAD = 3;

export function Sparkline({
  values,
  label,
  testId,
  max,
}: {
  values: (number | null)[];
  label: string;
  testId: string;
  max?: number;
}) {
  const top = Math.max(max ?? 0, ...values.map((v) => v ?? 0), 1);
  const step = values.length > 1 ? (W - 2 * PAD) / (values.length - 1) : 0;
  const x = (i: number) => PAD + i * step;
  const y = (v: number) => H - PAD - (v / top) * (H - 2 * PAD);
  // One path per run of values without a gap.
  const runs: string[] = [];
  let run: string[] = [];
  values.forEach((v, i) => {
    if (v === null) {
      if (run.length) runs.push(run.join(" "));
      run = [];
      return;
    }
    run.push(`${run.length ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  });
  if (run.length) runs.push(run.join(" "));
  const lastIndex = values.length - 1;
  const last = values[lastIndex];
  return (
    <svg
      viewBox={`0 0 ${W} ${H}`}
      width={W}
      height={H}
      className="spark"
      role="img"
      aria-label={label}
      data-testid={testId}
      data-values={values.map((v) => (v === null ? "" : String(v))).join(",")}
    >
      <line x1={PAD} x2={W - PAD} y1={H - PAD} y2={H - PAD} className="spark-axis" />
      {runs.map((d, i) => (
        <path key={i} d={d} className="spark-line" />
      ))}
      {last !== null && last !== undefined && <circle cx={x(lastIndex)} cy={y(last)} r={2.5} className="spark-dot" />}
    </svg>
  );
}
