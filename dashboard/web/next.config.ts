import type { NextConfig } from "next";

// A static export (out/), served by the dashboard's ASGI app: no Node.js server in production.
const config: NextConfig = {
  output: "export",
  trailingSlash: true,
  images: { unoptimized: true },
  poweredByHeader: false,
  reactStrictMode: true,
};

export default config;
