// swagger-ui-dist ships no types; the app uses only this.
declare module 'swagger-ui-dist' {
  /** The directory holding the package's built files. */
  export function getAbsoluteFSPath(): string;
}
