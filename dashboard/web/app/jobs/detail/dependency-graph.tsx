"use client";

import { useRouter } from "next/navigation";

// The jobs a job depends on, drawn left of it with an arrow from each, every node coloured by
// its state and linking to its own page. GetJobStatus gives one level (the job's direct
// dependencies with their states); at most MAX are drawn, the list below the graph has them all.

const MAX = 24;
const NODE_W = 250;
const NODE_H = 30;
const GAP = 8;
const WIDTH = 640;

type Node = { id: string; state: string };

function short(id: string): string {
  return id.length > 13 ? `${id.slice(0, 8)}…` : id;
}

export function DependencyGraph({ job, dependencies }: { job: Node; dependencies: Node[] }) {
  const router = useRouter();
  const drawn = dependencies.slice(0, MAX);
  const rows = Math.max(drawn.length, 1);
  const height = rows * (NODE_H + GAP) - GAP + 2;
  const target = { x: WIDTH - NODE_W - 1, y: height / 2 - NODE_H / 2 };
  const href = (id: string) => `/jobs/detail/?id=${encodeURIComponent(id)}`;
  function node(n: Node, x: number, y: number, self: boolean) {
    const visible = `${self ? "this job" : short(n.id)} · ${n.state}`;
    const body = (
      <>
        <rect x={x} y={y} width={NODE_W} height={NODE_H} rx={6} className={`node node-${n.state}`} />
        <circle cx={x + 14} cy={y + NODE_H / 2} r={6} className={`dot node-${n.state}`} />
        <text x={x + 28} y={y + NODE_H / 2 + 5} className="node-text">
          {visible}
        </text>
      </>
    );
    if (self) return <g data-job-id={n.id} data-state={n.state}>{body}</g>;
    return (
      <a
        key={n.id}
        href={href(n.id)}
        aria-label={`${visible}: dependency ${n.id}`}
        data-job-id={n.id}
        data-state={n.state}
        onClick={(e) => {
          e.preventDefault();
          router.push(href(n.id));
        }}
      >
        <title>{`${n.id}: ${n.state}`}</title>
        {body}
      </a>
    );
  }
  return (
    <figure className="graph">
      <svg
        viewBox={`0 0 ${WIDTH} ${height}`}
        width="100%"
        style={{ maxWidth: WIDTH }}
        role="group"
        aria-label={`Dependency graph: ${dependencies.length} jobs this one depends on`}
        data-testid="dep-graph"
      >
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
            <path d="M0,0 L10,5 L0,10 z" className="edge-head" />
          </marker>
        </defs>
        {drawn.map((d, i) => {
          const y = 1 + i * (NODE_H + GAP) + NODE_H / 2;
          const x1 = NODE_W + 1;
          const x2 = target.x;
          const y2 = target.y + NODE_H / 2;
          const mid = (x1 + x2) / 2;
          return (
            <path
              key={`edge-${d.id}`}
              d={`M${x1},${y} C${mid},${y} ${mid},${y2} ${x2 - 2},${y2}`}
              className={`edge edge-${d.state}`}
              markerEnd="url(#arrow)"
            />
          );
        })}
        {drawn.map((d, i) => node(d, 1, 1 + i * (NODE_H + GAP), false))}
        {node(job, target.x, target.y, true)}
      </svg>
      {dependencies.length > MAX && (
        <figcaption className="muted">
          {MAX} of {dependencies.length} drawn; the list below has them all.
        </figcaption>
      )}
    </figure>
  );
}
