package testenv

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// serveAPI answers the AWS API calls the gateway makes, each only after
// its signature checks out.
func (a *AWS) serveAPI(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if target := r.Header.Get("X-Amz-Target"); target != "" {
		a.serveJSON(w, r, target, body)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || r.Method != http.MethodPost {
		queryError(w, "ec2", http.StatusBadRequest, "MalformedQueryString", "not a form-encoded POST")
		return
	}
	sig, err := a.verifyHeader(r, body)
	service := "sts"
	if sig != nil {
		service = sig.service
	}
	if err != nil {
		se, _ := err.(*sigError)
		if se == nil {
			se = &sigError{"IncompleteSignature", err.Error()}
		}
		a.logCall("%s %s: refused: %s", service, form.Get("Action"), se)
		queryError(w, service, http.StatusForbidden, se.code, se.msg)
		return
	}
	if sig.region != a.Region {
		queryError(w, service, http.StatusBadRequest, "SignatureDoesNotMatch", fmt.Sprintf("Credential should be scoped to a valid region, not '%s'", sig.region))
		return
	}
	switch {
	case service == "sts" && form.Get("Action") == "AssumeRole":
		a.assumeRole(w, sig, form)
	case service == "ec2" && form.Get("Action") == "DescribeInstanceConnectEndpoints":
		a.describeEICE(w, sig, form)
	default:
		queryError(w, service, http.StatusBadRequest, "InvalidAction", fmt.Sprintf("the emulator does not know %s %s", service, form.Get("Action")))
	}
}

// queryError writes an error the way STS (ErrorResponse) or EC2
// (Response/Errors) do.
func queryError(w http.ResponseWriter, service string, status int, code, msg string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	if service == "ec2" {
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>`, xmlEscape(code), xmlEscape(msg), requestID())
		return
	}
	fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>`, xmlEscape(code), xmlEscape(msg), requestID())
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func requestID() string {
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", time.Now().UnixNano()%1e12)
}

// assumeRole issues temporary credentials for a role the caller may
// assume.
func (a *AWS) assumeRole(w http.ResponseWriter, sig *signed, form url.Values) {
	role := form.Get("RoleArn")
	a.mu.Lock()
	allowed := a.roles[role]
	a.mu.Unlock()
	if code := a.check("sts:AssumeRole"); code != "" || !allowed {
		if code == "" {
			code = "AccessDenied"
		}
		a.logCall("sts:AssumeRole %s: refused: %s", role, code)
		msg := fmt.Sprintf("User: %s is not authorized to perform: sts:AssumeRole on resource: %s", sig.arn, role)
		status := http.StatusForbidden
		if code == "Throttling" {
			msg, status = "Rate exceeded", http.StatusBadRequest
		}
		queryError(w, "sts", status, code, msg)
		return
	}
	name := form.Get("RoleSessionName")
	akid := "ASIA" + strings.ToUpper(randomHex(8))
	cred := awsCred{secret: randomHex(20), sessionToken: "IQoJb3JpZ2luX2VjE" + randomHex(40), expires: a.Clock.Now().Add(time.Hour)}
	rolePath := role[strings.Index(role, ":role/")+len(":role/"):]
	cred.arn = fmt.Sprintf("arn:aws:sts::%s:assumed-role/%s/%s", a.AccountID, rolePath, name)
	a.mu.Lock()
	a.creds[akid] = cred
	a.mu.Unlock()
	a.logCall("sts:AssumeRole %s as %s: ok", role, name)
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><AssumedRoleUser><Arn>%s</Arn><AssumedRoleId>AROA%s:%s</AssumedRoleId></AssumedRoleUser><Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey><SessionToken>%s</SessionToken><Expiration>%s</Expiration></Credentials></AssumeRoleResult><ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></AssumeRoleResponse>`,
		xmlEscape(cred.arn), strings.ToUpper(randomHex(8)), xmlEscape(name), akid, cred.secret, cred.sessionToken, cred.expires.UTC().Format(time.RFC3339), requestID())
}

// describeEICE lists the requested EC2 Instance Connect Endpoints.
func (a *AWS) describeEICE(w http.ResponseWriter, sig *signed, form url.Values) {
	if code := a.check("ec2:DescribeInstanceConnectEndpoints"); code != "" {
		if code == "AccessDenied" {
			code = "UnauthorizedOperation"
		}
		a.logCall("ec2:DescribeInstanceConnectEndpoints: refused: %s", code)
		queryError(w, "ec2", http.StatusForbidden, code, fmt.Sprintf("You are not authorized to perform this operation. User: %s is not authorized to perform: ec2:DescribeInstanceConnectEndpoints", sig.arn))
		return
	}
	var items strings.Builder
	for i := 1; ; i++ {
		id := form.Get(fmt.Sprintf("InstanceConnectEndpointId.%d", i))
		if id == "" {
			break
		}
		a.mu.Lock()
		e := a.eices[id]
		a.mu.Unlock()
		if e == nil {
			a.logCall("ec2:DescribeInstanceConnectEndpoints %s: not found", id)
			queryError(w, "ec2", http.StatusBadRequest, "InvalidInstanceConnectEndpointId.NotFound", fmt.Sprintf("The instance connect endpoint ID '%s' does not exist", id))
			return
		}
		fmt.Fprintf(&items, `<item><ownerId>%s</ownerId><instanceConnectEndpointId>%s</instanceConnectEndpointId><instanceConnectEndpointArn>arn:aws:ec2:%s:%s:instance-connect-endpoint/%s</instanceConnectEndpointArn><state>create-complete</state><dnsName>%s</dnsName><fipsDnsName>%s</fipsDnsName><preserveClientIp>false</preserveClientIp></item>`,
			a.AccountID, id, a.Region, a.AccountID, id, e.DNSName, e.DNSName)
		a.logCall("ec2:DescribeInstanceConnectEndpoints %s: ok", id)
	}
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><DescribeInstanceConnectEndpointsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>%s</requestId><instanceConnectEndpointSet>%s</instanceConnectEndpointSet></DescribeInstanceConnectEndpointsResponse>`, requestID(), items.String())
}

// serveJSON answers the JSON 1.1 protocol of EC2 Instance Connect.
func (a *AWS) serveJSON(w http.ResponseWriter, r *http.Request, target string, body []byte) {
	sig, err := a.verifyHeader(r, body)
	if err != nil {
		se, _ := err.(*sigError)
		if se == nil {
			se = &sigError{"IncompleteSignature", err.Error()}
		}
		code := se.code
		switch code {
		case "SignatureDoesNotMatch":
			code = "InvalidSignatureException"
		case "InvalidClientTokenId":
			code = "UnrecognizedClientException"
		}
		a.logCall("%s: refused: %s", target, se)
		jsonError(w, http.StatusForbidden, code, se.msg)
		return
	}
	if sig.service != "ec2-instance-connect" || target != "AWSEC2InstanceConnectService.SendSSHPublicKey" {
		jsonError(w, http.StatusBadRequest, "UnknownOperationException", "the emulator knows AWSEC2InstanceConnectService.SendSSHPublicKey only")
		return
	}
	if sig.region != a.Region {
		jsonError(w, http.StatusForbidden, "InvalidSignatureException", fmt.Sprintf("Credential should be scoped to a valid region, not '%s'", sig.region))
		return
	}
	var in struct {
		InstanceID       string `json:"InstanceId"`
		InstanceOSUser   string `json:"InstanceOSUser"`
		SSHPublicKey     string `json:"SSHPublicKey"`
		AvailabilityZone string `json:"AvailabilityZone"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		jsonError(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	const action = "ec2-instance-connect:SendSSHPublicKey"
	if code := a.check(action); code != "" {
		a.logCall("%s %s %s: refused: %s", action, in.InstanceID, in.InstanceOSUser, code)
		if code == "Throttling" {
			jsonError(w, http.StatusBadRequest, "ThrottlingException", "Rate exceeded")
			return
		}
		jsonError(w, http.StatusForbidden, "AccessDeniedException", fmt.Sprintf("User: %s is not authorized to perform: %s on resource: arn:aws:ec2:%s:%s:instance/%s because no identity-based policy allows the %s action", sig.arn, action, a.Region, a.AccountID, in.InstanceID, action))
		return
	}
	a.mu.Lock()
	inst := a.instances[in.InstanceID]
	a.mu.Unlock()
	if inst == nil {
		a.logCall("%s %s: no such instance", action, in.InstanceID)
		jsonError(w, http.StatusNotFound, "EC2InstanceNotFoundException", "Instance not found")
		return
	}
	if in.AvailabilityZone != "" && in.AvailabilityZone != inst.az {
		jsonError(w, http.StatusBadRequest, "InvalidArgsException", "Instance is not in the given availability zone")
		return
	}
	pk, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(in.SSHPublicKey))
	if err != nil || len(strings.TrimSpace(string(rest))) > 0 || in.InstanceOSUser == "" {
		jsonError(w, http.StatusBadRequest, "InvalidArgsException", "Invalid public key or OS user")
		return
	}
	switch pk.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoRSA, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
	default:
		jsonError(w, http.StatusBadRequest, "InvalidArgsException", "Unsupported key type "+pk.Type())
		return
	}
	a.mu.Lock()
	a.keys = append(a.keys, pushedKey{instance: in.InstanceID, user: in.InstanceOSUser, key: strings.TrimSpace(in.SSHPublicKey), at: a.Clock.Now()})
	later := a.afterPush
	a.mu.Unlock()
	a.logCall("%s %s %s: ok", action, in.InstanceID, in.InstanceOSUser)
	if later != 0 {
		a.Clock.Advance(later)
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	fmt.Fprintf(w, `{"RequestId":%q,"Success":true}`, requestID())
}

func jsonError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-ErrorType", code)
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"__type": code, "Message": msg})
	_, _ = w.Write(b)
}
