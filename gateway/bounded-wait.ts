/**
 * A wait with a bound, for closes and scrapes that must not hang on a Redis that does not answer: the
 * work's value, or undefined once `ms` passed first (the work itself goes on). The timer keeps the
 * process alive while it runs and is cleared as soon as either ends; a rejection of `work` passes through.
 */
export async function within<T>(work: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([work, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
