"use client";

import Link from "next/link";
import { usePathname } from "next/navigation";

const LINKS = [
  ["/", "Overview"],
  ["/jobs/", "Jobs"],
  ["/submit/", "Submit"],
  ["/queues/", "Queues"],
  ["/schedules/", "Schedules"],
  ["/dead-letters/", "Dead letters"],
  ["/executors/", "Executors"],
] as const;

export function Nav() {
  const path = usePathname();
  return (
    <nav aria-label="Main">
      <ul>
        {LINKS.map(([href, label]) => {
          const current = href === "/" ? path === "/" : path.startsWith(href);
          return (
            <li key={href}>
              <Link href={href} aria-current={current ? "page" : undefined}>
                {label}
              </Link>
            </li>
          );
        })}
      </ul>
    </nav>
  );
}
