import type { Metadata } from "next";
import Link from "next/link";
import type { ReactNode } from "react";
import { SessionGate } from "@/lib/session";
import { Nav } from "./nav";
import "./globals.css";

export const metadata: Metadata = { title: "jobsched dashboard" };

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body>
        <a className="skip" href="#main">
          Skip to content
        </a>
        <header className="top">
          <Link href="/" className="brand">
            jobsched
          </Link>
          <Nav />
        </header>
        <main id="main">
          <SessionGate>{children}</SessionGate>
        </main>
      </body>
    </html>
  );
}
