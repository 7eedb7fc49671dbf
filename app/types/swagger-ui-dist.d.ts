// swagger-ui-dist ships no types; the app uses only this. Its index also loads (and runs) the whole
// browser bundle, ~26 MB of every worker's memory for nothing on the server: the app imports the one
// module it needs instead.
declare module 'swagger-ui-dist/absolute-path.js' {
  /** The directory holding the package's built files. */
  function getAbsoluteFSPath(): string;
  export = getAbsoluteFSPath;
}
