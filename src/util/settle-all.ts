// Waiting for side-by-side work where nothing may keep running after a failure
// is reported: every promise settles first, then the first rejection (in the
// given order) is thrown, else the values come back as Promise.all's would.
// Imported by: anyone.

/** Promise.all's result, but only once every promise has settled; throws the first rejection in order. */
export async function settleAll<T extends readonly unknown[] | []>(values: T): Promise<{ -readonly [P in keyof T]: Awaited<T[P]> }> {
  const results = await Promise.allSettled(values);
  for (const r of results) if (r.status === "rejected") throw r.reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as { -readonly [P in keyof T]: Awaited<T[P]> };
}
