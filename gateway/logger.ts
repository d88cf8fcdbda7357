/** winston, one JSON object per line. Callers never pass secrets; `redact` guards the few places that could. */
import winston from 'winston';

export type Logger = winston.Logger;

export function createLogger(level = 'info', silent = false): Logger {
  return winston.createLogger({
    level,
    silent,
    format: winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: false }), winston.format.json()),
    defaultMeta: { service: 'spillway' },
    transports: [new winston.transports.Console()],
  });
}

const SECRET_QUERY = /([?&](?:api-key|api_key|key|sig|code)=)[^&]*/gi;

/** Strips credentials a URL may carry in its query (SAS-style signatures, keys) before it is logged. */
export function redactUrl(url: string): string {
  return url.replace(SECRET_QUERY, '$1***');
}
