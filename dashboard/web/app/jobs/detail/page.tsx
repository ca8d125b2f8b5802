"use client";

import { Suspense } from "react";
import { JobView } from "./job-view";

export default function JobDetailPage() {
  return (
    <Suspense fallback={<p aria-busy="true">Loading…</p>}>
      <JobView />
    </Suspense>
  );
}
