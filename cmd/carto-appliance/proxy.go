package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/supervisor"
)

// proxyFlags are the proxy settings, shared by `install` (prefixed
// "proxy-") and `proxy set`.
type proxyFlags struct {
	url, noProxy, caCert string
	reject               bool
}

func (p *proxyFlags) register(f *pflag.FlagSet, prefix string) {
	f.StringVar(&p.url, prefix+"url", "", "forward proxy, http://host:port or https://host:port (no credentials)")
	f.StringVar(&p.noProxy, prefix+"no-proxy", "", "extra hosts, .domains, addresses or CIDRs reached directly (comma-separated)")
	f.StringVar(&p.caCert, prefix+"ca-cert", "", "the proxy's CA certificate (PEM), trusted by the services and the Docker engine")
	f.BoolVar(&p.reject, prefix+"reject-unauthorized", true, "HTTPS proxy: reject certificates the services cannot verify (false is insecure)")
}

func (p *proxyFlags) input(cmd *cobra.Command, prefix string) installer.ProxyInput {
	in := installer.ProxyInput{URL: p.url, NoProxy: p.noProxy, CACertFile: p.caCert}
	if cmd.Flags().Changed(prefix + "reject-unauthorized") {
		v := p.reject
		in.RejectUnauthorized = &v
	}
	return in
}

// confirmer asks on the terminal before the Docker engine restarts; with
// --yes it does not ask; with no terminal it declines (the installer then
// says how to restart the engine by hand).
func confirmer(yes bool) func(string) bool {
	return func(reason string) bool {
		if yes {
			return true
		}
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return false
		}
		fmt.Fprintf(os.Stderr, "%s.\nRestart the Docker engine now? [y/N] ", reason)
		answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		return strings.HasPrefix(strings.ToLower(strings.TrimSpace(answer)), "y")
	}
}

// engineProxyChange is why the Docker engine may restart, asked before a
// proxy change is sent to the agent.
const engineProxyChange = "The Docker engine restarts to take the new proxy settings (every container restarts with it)"

func newProxyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "proxy", Short: "Set, clear or test the corporate proxy"}

	var px proxyFlags
	var yes bool
	set := &cobra.Command{
		Use:   "set --url URL",
		Short: "Send the stack, the Docker engine and the appliance through a proxy",
		Long: `Sets HTTP_PROXY, HTTPS_PROXY (and GRPC_PROXY for an HTTP proxy), NO_PROXY,
NODE_EXTRA_CA_CERTS and NODE_TLS_REJECT_UNAUTHORIZED (for an HTTPS proxy), each in
upper and lower case, recreates the services whose environment changed, and gives
the Docker engine the same proxy (it restarts, after you confirm).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			in := px.input(cmd, "")
			absFile(&in.CACertFile)
			return runOp(cmd, yes, func(viaAgent bool) supervisor.Op {
				return supervisor.ProxySetOp{Proxy: in, EngineRestart: engineRestart(yes, viaAgent, engineProxyChange)}
			})
		},
	}
	px.register(set.Flags(), "")
	set.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask before restarting the Docker engine")

	var clearYes bool
	clear := &cobra.Command{
		Use:   "clear",
		Short: "Remove the proxy: the stack and the engine go direct",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, clearYes, func(viaAgent bool) supervisor.Op {
				return supervisor.ProxyClearOp{EngineRestart: engineRestart(clearYes, viaAgent, engineProxyChange)}
			})
		},
	}
	clear.Flags().BoolVarP(&clearYes, "yes", "y", false, "do not ask before restarting the Docker engine")

	var topts installer.ProxyTestOptions
	var asJSON bool
	test := &cobra.Command{
		Use:   "test",
		Short: "Check every domain CARTO needs through the proxy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			topts.Paths = pathsFrom(cmd)
			results, err := installer.TestProxy(cmd.Context(), topts)
			if err != nil {
				return err
			}
			failed := 0
			for _, r := range results {
				if !r.OK && !r.Optional {
					failed++
				}
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), results); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DOMAIN\tFEATURE\tRESULT\tVIA\tDETAIL")
				for _, r := range results {
					res := "ok"
					if !r.OK {
						res = "FAIL " + r.Kind
						if r.Optional {
							res = "optional: " + r.Kind
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Domain, r.Feature, res, r.Via, r.Reason)
				}
				tw.Flush()
			}
			if failed > 0 {
				return fmt.Errorf("%d required domain(s) unreachable", failed)
			}
			return nil
		},
	}
	test.Flags().StringSliceVar(&topts.Domains, "domain", nil, "check these domains instead of CARTO's list (repeatable)")
	test.Flags().DurationVar(&topts.Timeout, "timeout", 0, "per-domain timeout (default 10s)")
	test.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	cmd.AddCommand(set, clear, test)
	return cmd
}
