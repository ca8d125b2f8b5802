// What the test harness (tests/e2e/test_typescript_client.py) gives: a real scheduler running
// --auth required, and API keys for one tenant.
export function env(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: these tests run against a real scheduler started by ` +
        "tests/e2e/test_typescript_client.py (make test, or pytest that file)",
    );
  }
  return value;
}

export const ADDRESS = () => env("JOBSCHED_ADDRESS");
export const OPERATOR_TOKEN = () => env("JOBSCHED_OPERATOR_TOKEN");
export const EXECUTOR_TOKEN = () => env("JOBSCHED_EXECUTOR_TOKEN");
export const TENANT = () => env("JOBSCHED_TENANT");

/** Polls `check` until it returns a value (not undefined), or fails after `withinMs`. */
export async function eventually<T>(check: () => Promise<T | undefined>, withinMs = 20_000): Promise<T> {
  const deadline = Date.now() + withinMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`not true within ${withinMs} ms (last error: ${String(last)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
