/** winston, one JSON object per line. Callers never pass secrets: keys and upstream URLs stay out of every field. */
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
