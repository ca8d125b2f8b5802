"use client";

import { Suspense } from "react";
import { JobsList } from "./jobs-list";

export default function JobsPage() {
  return (
    <Suspense fallback={<p aria-busy="true">Loading…</p>}>
      <JobsList />
    </Suspense>
  );
}
